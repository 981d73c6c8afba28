"""Retrieval: NIAH accuracy over context length × needle depth, retrieval heads, and what
masking the top retrieval heads does (vs random heads)."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, frames, ui

st.title("Retrieval heads")
context = ui.run_context()
table = context.table
root, run_id = context.root, context.run_id
if not (table["probe"] == frames.RETRIEVAL_PROBE).any():
    ui.missing("retrieval results", f"{ui.scan_command(root, 'retrieval')} --run-id <new run>")
    st.stop()

accuracy = frames.overall(table, frames.RETRIEVAL_PROBE, "niah_accuracy")
recall = frames.overall(table, frames.RETRIEVAL_PROBE, "niah_recall")
columns = st.columns(3)
if accuracy is not None:
    columns[0].metric("NIAH accuracy (all cells)", f"{accuracy:.0%}")
if recall is not None:
    columns[1].metric("mean ROUGE-1 recall", f"{recall:.2f}")

st.subheader("Needle in a haystack")
measure = st.radio(
    "cell value",
    ["niah_accuracy", "niah_recall"],
    horizontal=True,
    key="retrieval_measure",
    help="accuracy: share of samples answered (ROUGE-1 recall above the threshold)",
)
grid = frames.niah_grid(table, measure)
if grid.empty:
    st.info("This run stores no per-cell NIAH results.")
else:
    st.plotly_chart(
        figures.grid_heatmap(
            grid,
            x="length",
            y="depth",
            value_label=measure,
            title=f"{measure} by context length (tokens) and needle depth (%)",
        ),
        key="retrieval_grid",
    )

st.subheader("Retrieval score per head")
scores = frames.head_values(table, frames.RETRIEVAL_PROBE, "retrieval_score")
if scores.empty:
    st.info("No retrieval scores: no sample was answered, so no head could be scored.")
else:
    threshold = st.number_input(
        "retrieval head threshold",
        min_value=0.0,
        max_value=1.0,
        value=0.1,
        step=0.05,
        key="retrieval_threshold",
        help="Wu et al. call heads with score > 0.1 retrieval heads",
    )
    n_layers, n_heads = context.shape
    above = int((scores["value"] > threshold).sum())
    st.caption(
        f"{above} of {len(scores)} heads ({above / len(scores):.1%}) score above {threshold:g}"
    )
    st.plotly_chart(
        figures.head_heatmap(
            scores, title="retrieval score", threshold=threshold, n_layers=n_layers, n_heads=n_heads
        ),
        key="retrieval_heads",
    )
    st.dataframe(frames.top_heads(scores, 20, threshold), hide_index=True, key="retrieval_top")

st.subheader("Masking curves")
units = frames.sweep_units(table)
masked = units[
    units["ranking"].fillna("").str.contains("retrieval_score")
    & units["selection"].isin(["top", "random"])
    & units["strength"].isna()
]
if masked.empty:
    ui.missing(
        "masking sweep over the top retrieval heads",
        f"headlab sweep --tasks ioi --top-metric retrieval_score --top-mode uniform "
        f"--k 1,2,4,8 --run {run_id} --out {root}",
    )
    st.stop()
left, right = st.columns(2)
metric = left.selectbox(
    "task measure", sorted(masked["metric"].unique()), key="retrieval_mask_metric"
)
mode = right.selectbox("mask", sorted(masked["kind"].unique()), key="retrieval_mask_mode")
(ranking,) = masked["ranking"].unique()[:1]
curves = frames.topk_curves(units, metric, ranking, mode)
st.plotly_chart(
    figures.spread_lines(
        curves,
        x="k",
        group="selection",
        y_label=metric,
        title=f"{metric} with the top-k retrieval heads masked ({mode}) vs "
        "k random heads (min–max over seeds)",
    ),
    key="retrieval_masking",
)
