"""Retrieval: NIAH accuracy over context length × needle depth, retrieval heads, and what
masking the top retrieval heads does (vs random heads)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, figures, frames, ui

st.title("Retrieval heads")
context = ui.run_context()
table = context.table
root, run_id = context.root, context.run_id
if not (table["probe"] == frames.RETRIEVAL_PROBE).any():
    ui.missing("retrieval results", ui.scan_command(root, "retrieval"))
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
summary = data.side_table(root, run_id, frames.MASKING_TABLE)
if summary is None or summary.empty:
    ui.missing(
        "masking experiment (top-k retrieval heads masked vs random heads)",
        f"headlab mask-retrieval {run_id} --ks 1,2,4,8 --data {root}",
    )
else:
    left, right = st.columns(2)
    mode = left.selectbox("mask", sorted(summary["mode"].dropna().unique()), key="mask_mode")
    measure = right.radio("measure", ["accuracy", "recall"], horizontal=True, key="mask_measure")
    curves = frames.masking_curves(summary, mode, measure)
    figure = figures.spread_lines(
        curves,
        x="k",
        group="selection",
        y_label=f"NIAH {measure}",
        title=f"NIAH {measure} with the top-k retrieval heads masked ({mode}) vs k random heads "
        "from the same layers (min–max over seeds)",
    )
    baseline = frames.unmasked(summary, measure)
    if baseline is not None:
        figure.add_hline(y=baseline, line_dash="dot", annotation_text="unmasked")
    st.plotly_chart(figure, key="retrieval_masking")

units = frames.sweep_units(table)
masked = units[
    units["ranking"].fillna("").str.contains("retrieval_score")
    & units["selection"].isin(["top", "random"])
    & units["strength"].isna()
]
if not masked.empty:
    st.markdown(
        "**Sweeps ranked by retrieval score** (`headlab sweep --top-metric retrieval_score`)"
    )
    left, right = st.columns(2)
    metric = left.selectbox(
        "task measure", sorted(masked["metric"].unique()), key="sweep_mask_metric"
    )
    mode = right.selectbox("ablation", sorted(masked["kind"].unique()), key="sweep_mask_mode")
    ranking = sorted(masked["ranking"].unique())[0]
    st.plotly_chart(
        figures.spread_lines(
            frames.topk_curves(units, metric, ranking, mode),
            x="k",
            group="selection",
            y_label=metric,
            title=f"{metric} with the top-k heads by {ranking} ablated ({mode}) vs k random heads",
        ),
        key="retrieval_sweep",
    )

samples = data.side_table(root, run_id, frames.NIAH_SAMPLES_TABLE)
if samples is not None and not samples.empty:
    with st.expander(f"the {len(samples)} NIAH samples and the model's answers"):
        shown = [
            c
            for c in ("length", "depth", "question", "answer", "response", "recall", "correct")
            if c in samples
        ]
        st.dataframe(samples[shown], hide_index=True, key="retrieval_samples")
