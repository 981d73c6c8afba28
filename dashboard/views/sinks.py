"""Sinks: Sink_k^ε by layer, where in the sequence the sinks are, and massive activations."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, frames, ui
from probes.core import definitions

st.title("Attention sinks")
context = ui.run_context()
table = context.table
if not (table["probe"] == "sink").any():
    ui.missing("sink results", ui.scan_command(context.root, "sink"))
    st.stop()

params = context.probe_params("sink")
epsilon = params.get("epsilon")
positions = sorted(
    int(p)
    for p in table.loc[(table["probe"] == "sink") & (table["metric"] == "sink_rate"), "position"]
    .dropna()
    .unique()
)
overall = frames.sink_percent_by_layer(table, positions)
if positions:
    first = overall[overall["position"] == positions[0]]["value"].mean()
    st.metric(
        f"Sink_{positions[0]}^ε over all heads (ε = {epsilon})",
        f"{first:.1f}%",
        help="percentage of (sequence, layer, head) whose α on the key exceeds ε (Gu et al. 2024)",
    )
    shown = st.multiselect(
        "key positions k", positions, default=positions[:1], key="sinks_positions"
    )
    st.plotly_chart(
        figures.sink_by_layer(overall[overall["position"].isin(shown)], epsilon),
        key="sinks_by_layer",
    )

st.subheader("Where the sinks are")
choice = st.radio(
    "colour by",
    ["Sink_k^ε (% of heads)", "mean α over heads"],
    horizontal=True,
    key="sinks_map_metric",
)
metric = "sink_rate" if choice.startswith("Sink") else "alpha"
st.plotly_chart(
    figures.position_map(
        frames.sink_map(table, metric),
        value_label="% heads" if metric == "sink_rate" else "α",
        title=f"{choice} by layer and key position",
    ),
    key="sinks_map",
)
hidden = frames.head_values(table, "sink", "hidden_sink_count")
if not hidden.empty:
    n_layers, n_heads = context.shape
    threshold = params.get("hidden_threshold")
    ui.head_map_chart(
        figures.head_heatmap(
            hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            title=f"hidden sinks beyond position 0 per sequence (ACT: α > {threshold})",
            value_label=definitions.label("sink", "hidden_sink_count"),
            definition=definitions.hover("sink", "hidden_sink_count"),
        ),
        key="sinks_hidden",
    )
ratios = frames.massive_ratios(table)
if not ratios.empty:
    st.plotly_chart(figures.massive_activation_lines(ratios), key="sinks_massive")
