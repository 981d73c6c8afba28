"""Head detail: one head's scores on every metric, and its attention on a stored prompt."""

from __future__ import annotations

import streamlit as st

from dashboard import data, figures, frames, ui

st.title("Head detail")
context = ui.run_context()
n_layers, n_heads = context.shape
if n_layers == 0:
    ui.missing("per-head scores", ui.scan_command(context.root))
    st.stop()
layer, head = ui.select_head(n_layers, n_heads, "detail")
st.query_params.update({"layer": str(layer), "head": str(head)})

st.subheader(f"L{layer}H{head}: scores across metrics")
profile = frames.head_profile(context.table, layer, head)
if profile.empty:
    st.info(f"L{layer}H{head} has no per-head scores in this run.")
else:
    headline = profile[profile["position"].isna() | (profile["position"] == 0)]
    st.plotly_chart(
        figures.profile_bars(
            headline, title="percentile among all heads (per-position metrics at k = 0)"
        ),
        key="detail_profile",
    )
    st.dataframe(
        profile.drop(columns=["probe", "metric", "condition"]), hide_index=True, key="detail_scores"
    )

st.subheader(f"L{layer}H{head}: attention pattern")
prompts = data.pattern_prompts(context.root, context.run_id)
if not prompts:
    ui.missing("stored attention patterns", ui.scan_command(context.root, "sink,pattern"))
    st.stop()
prompt_id = st.selectbox("prompt", sorted(prompts), key="detail_prompt")
tokens = prompts[prompt_id]
cells = data.head_pattern(context.root, context.run_id, layer, head, prompt_id)
if cells.empty:
    st.info(f"No pattern of L{layer}H{head} is stored for prompt {prompt_id!r}.")
    st.stop()
pooled = tokens.n_blocks < len(tokens.text)
st.caption(
    f"{len(tokens.text)} tokens"
    + (
        f", pooled into {tokens.n_blocks} blocks: each cell is the attention mass a query of "
        "the row's block sends to the column's block, averaged over the block's queries"
        if pooled
        else "; each cell is the attention weight A[query, key]"
    )
)
matrix = frames.pattern_matrix(cells, tokens.n_blocks)
labels = [tokens.block_text(block) for block in range(tokens.n_blocks)]
st.plotly_chart(
    figures.pattern_heatmap(matrix, labels, title=f"L{layer}H{head} on {prompt_id}"),
    key="detail_pattern",
)
