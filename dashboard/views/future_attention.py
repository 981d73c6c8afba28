"""Future attention: per-token WAAD (local heads) and FAI (global heads) along a prompt, and
which heads are local or global (Li et al. 2025)."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, frames, ui
from probes.core import schema

st.title("Future attention")
context = ui.run_context()
table = context.table
if not (table["probe"] == frames.FUTURE_PROBE).any():
    ui.missing("future-attention results", ui.scan_command(context.root, "future_attention"))
    st.stop()

params = context.probe_params(frames.FUTURE_PROBE)
tokens = frames.token_rows(table, frames.FUTURE_PROBE, ["waad", "fai"])
if tokens.empty:
    st.info("This run stores no per-token WAAD / FAI series.")
else:
    prompt = st.selectbox("prompt", sorted(tokens["prompt"].unique()), key="future_prompt")
    text, series = frames.prompt_series(tokens, prompt)
    window = params.get("window", "?")
    low, high = params.get("horizon_low", "?"), params.get("horizon_high", "?")
    captions = {
        "waad": ("WAAD_t", f"windowed attention distance of the local heads (W = {window})"),
        "fai": (
            "FAI_s",
            f"attention later tokens (t − s in [{low}, {high}]) pay to s, global heads",
        ),
    }
    for metric, (label, what) in captions.items():
        if metric in series:
            st.plotly_chart(
                figures.token_series(
                    {label: series[metric]}, text, title=f"{label}: {what}", y_label=label
                ),
                key=f"future_{metric}",
            )
    mine = tokens[tokens["prompt"] == prompt]
    fai = mine[mine["metric"] == "fai"].nlargest(10, "value")
    st.markdown("**Tokens with the highest FAI** (anchors later tokens look back to)")
    st.dataframe(fai[["position", "token", "value"]], hide_index=True, key="future_anchors")

st.subheader("Local and global heads")
locality = schema.metric(frames.FUTURE_PROBE, "locality")
classes = table[(table["probe"] == frames.FUTURE_PROBE) & (table["metric"] == locality)]
distance_metric = schema.metric(frames.FUTURE_PROBE, "mean_attention_distance")
distance = frames.head_values(table, frames.FUTURE_PROBE, distance_metric)
if classes.empty:
    st.info("This run stores no head classes.")
else:
    n_layers, n_heads = context.shape
    st.plotly_chart(
        figures.locality_map(
            classes[["layer", "head", "condition"]].astype({"layer": "int64", "head": "int64"}),
            distance,
            n_layers=n_layers,
            n_heads=n_heads,
        ),
        key="future_locality",
    )
