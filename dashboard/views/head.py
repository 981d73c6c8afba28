"""Head: everything stored about one head of the selected model, across all its runs — every
metric with its definition, value and percentile; its classes; the effect of ablating it; its
attention on stored prompts; the heads most like it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analyses.results.store import StoreError
from dashboard import data, figures, frames, tokens_view, ui
from dashboard.frames import heads

title = st.empty()
context = ui.run_context()
n_layers, n_heads = context.shape
if n_layers == 0:
    title.title("Head")
    ui.missing("per-head scores", ui.scan_command(context.root))
    st.stop()
layer, head = ui.select_head(n_layers, n_heads, "head")
title.title(f"L{layer}H{head} of {context.model}")

# The model's runs, newest first, the selected run leading; unreadable ones are skipped.
runs = data.runs(context.root)
runs = runs[runs["model"].astype(str) == context.model].iloc[::-1]
ids = [context.run_id, *(run for run in runs["run_id"] if run != context.run_id)]
tables: dict[str, pd.DataFrame] = {}
for run_id in ids:
    try:
        tables[run_id] = data.results(context.root, run_id)
    except StoreError as error:
        st.caption(f"skipped run `{run_id}`: {error}")
st.caption(
    f"{len(tables)} run(s) of {context.model}; the selected run `{context.run_id}` first. "
    "Percentile among the run's heads: 100 = highest, 0 = lowest, ties share their mean."
)

labels = heads.classes(tables, layer, head)
profile = heads.profile(tables, layer, head)
here = profile[profile["run"] == context.run_id]
headline = here[here["position"].isna() | (here["position"] == 0)]
cards = [*labels.items()]
for metric in ("retrieval/retrieval_score", "sink/alpha", "detectors/induction"):
    rows = headline[headline["metric"] == metric]
    if not rows.empty:
        row = rows.iloc[0]
        cards.append((row["label"], f"{row['value']:.3g} (p{row['percentile']:.0f})"))
if cards:
    for column, (name, value) in zip(st.columns(len(cards)), cards, strict=True):
        column.metric(name, value)

st.subheader("Scores")
if profile.empty:
    st.info(f"L{layer}H{head} has no per-head scores in the runs of {context.model}.")
else:
    st.plotly_chart(
        figures.profile_bars(
            headline.assign(label=headline["label"] + " · " + headline["metric"]),
            title="percentile among the selected run's heads (per-position metrics at k = 0)",
        ),
        key="head_profile",
    )
    columns = ["label", "metric", "position", "value", "rank", "n_heads", "percentile",
               "definition"] + (["run"] if len(tables) > 1 else [])  # fmt: skip
    st.dataframe(
        profile[columns],
        hide_index=True,
        key="head_scores",
        column_config={
            "label": st.column_config.TextColumn("measure"),
            "definition": st.column_config.TextColumn("definition", width="large"),
            "percentile": st.column_config.ProgressColumn(
                "percentile", min_value=0, max_value=100, format="%.0f"
            ),
        },
    )

st.subheader("Effect of intervening on it")
effects = heads.effects(tables, layer, head)
if effects.empty:
    ui.missing(
        f"single-head ablation of L{layer}H{head}",
        f"headlab sweep --tasks ioi --single-head zero --model {context.model} "
        f"--data {context.root}",
    )
else:
    st.caption("harm = how much worse the task got than clean; positive = the edit hurt")
    st.dataframe(effects, hide_index=True, key="head_effects")

st.subheader("Heads most like it")
similar = heads.similar_heads(tables[context.run_id], layer, head)
if similar.empty:
    st.info("Too few per-head metrics in this run to compare heads.")
else:
    st.caption("correlation of percentiles across this run's metrics; select a row to open it")
    ui.head_table(similar, key="head_similar")

st.subheader("Attention on stored prompts")
st.caption("Hover a token to colour the keys this head attends to from it (the Token view page "
           "puts several heads side by side).")  # fmt: skip
tokens_view.token_view(context.root, context.run_id, [(layer, head)], key="head_tokens")
prompts = data.pattern_prompts(context.root, context.run_id)
if not prompts:
    st.stop()  # the pooled pattern needs `--probes …,pattern`; the token view said what to run
prompt_id = st.selectbox("prompt", sorted(prompts), key="head_prompt")
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
block_labels = [tokens.block_text(block) for block in range(tokens.n_blocks)]
st.plotly_chart(
    figures.pattern_heatmap(matrix, block_labels, title=f"L{layer}H{head} on {prompt_id}"),
    key="head_pattern",
)
