"""Sweeps: a task measure as more top-ranked heads are ablated vs as many random heads (spread
over seeds), intervention strength curves, and single-head ablation maps."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, frames, ui
from probes.core import definitions, schema

st.title("Sweeps")
context = ui.run_context()
root, run_id = context.root, context.run_id
units = frames.sweep_units(context.table)
example = (
    f"headlab sweep --tasks ioi --top-metric alpha --top-probe sink --top-position 0 "
    f"--k 1,2,4,8 --seeds 0,1,2 --run {run_id} --data {root}"
)
if units.empty:
    ui.missing("sweep results", example)
    st.stop()
st.caption(f"A measure's harm is {definitions.HARM}.")


def default_measure(metrics: list[str]) -> int:
    """Index of the first continuous measure (logit difference, loss) rather than an accuracy
    that moves in steps of 1/n prompts."""
    for preferred in ("logit_diff", "loss"):
        for index, metric in enumerate(metrics):
            if metric.split(".")[1:2] == [preferred]:
                return index
    return 0


ranked = units[units["selection"].isin(["top", "random"]) & units["strength"].isna()]
st.subheader("Top-k vs random-k")
if ranked.empty:
    ui.missing("top-k vs random-k sweep", example)
else:
    left, middle, right = st.columns(3)
    ranking = left.selectbox("ranked by", sorted(ranked["ranking"].unique()), key="sweep_ranking")
    mode = middle.selectbox("ablation", sorted(ranked["kind"].unique()), key="sweep_mode")
    metrics = sorted(ranked.loc[ranked["ranking"] == ranking, "metric"].unique())
    metric = right.selectbox(
        "measure", metrics, index=default_measure(metrics), key="sweep_metric",
        help=definitions.hover(schema.SWEEP_PROBE, metrics[0]),
    )  # fmt: skip
    curves = frames.topk_curves(units, metric, ranking, mode)
    figure = figures.spread_lines(
        curves,
        x="k",
        group="selection",
        y_label=metric,
        title=f"{metric}: top-k by {ranking} vs k random heads from the same layers ({mode})",
    )
    clean = frames.clean_value(context.table, metric)
    if clean is not None and not metric.endswith(".harm"):
        figure.add_hline(y=clean, line_dash="dot", annotation_text="clean")
    st.plotly_chart(figure, key="sweep_topk")
    st.dataframe(curves, hide_index=True, key="sweep_topk_table")

strengths = units[units["strength"].notna()]
if not strengths.empty:
    st.subheader("Intervention strength")
    measures = sorted(strengths["metric"].unique())
    metric = st.selectbox(
        "measure", measures, index=default_measure(measures), key="sweep_strength_metric"
    )
    curves = frames.strength_curves(units, metric)
    st.plotly_chart(
        figures.spread_lines(
            curves,
            x="strength",
            group="series",
            y_label=metric,
            title=f"{metric} against intervention strength",
        ),
        key="sweep_strength",
    )

single = units[units["layer"].notna() & units["selection"].isna()]
if not single.empty:
    st.subheader("One head at a time")
    left, right = st.columns(2)
    measures = sorted(single["metric"].unique())
    metric = left.selectbox(
        "measure", measures, index=default_measure(measures), key="sweep_single_metric"
    )
    mode = right.selectbox("ablation", sorted(single["kind"].unique()), key="sweep_single_mode")
    values = single[(single["metric"] == metric) & (single["kind"] == mode)][
        ["layer", "head", "value"]
    ].astype({"layer": "int64", "head": "int64"})
    n_layers, n_heads = context.shape
    ui.head_map_chart(
        figures.head_heatmap(
            values,
            title=f"{metric}, each head ablated alone ({mode}) — click a head to open it",
            n_layers=n_layers,
            n_heads=n_heads,
            value_label=definitions.label(schema.SWEEP_PROBE, metric),
            definition=definitions.hover(schema.SWEEP_PROBE, metric),
        ),
        key="sweep_single",
    )
    estimate = frames.head_values(context.table, "attribution", metric, mode)
    paired = frames.paired_heads(values, estimate)
    if len(paired) > 1:
        rho = paired["a"].rank().corr(paired["b"].rank())
        st.plotly_chart(
            figures.compare_scatter(
                paired,
                "exact ablation",
                "attribution patching",
                title=f"attribution patching vs exact (Spearman ρ = {rho:.3f})",
            ),
            key="sweep_attribution",
        )
