"""Head map: one metric over every layer × head, a threshold, and the top-k heads."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, frames, ui
from probes.core import definitions

st.title("Head map")
context = ui.run_context()
series = frames.in_probe_order(
    frames.head_series(context.table), list(context.manifest.get("probes") or {})
)
if series.empty:
    ui.missing("per-head scores", ui.scan_command(context.root))
    st.stop()

_names = {
    row.label: definitions.label(row.probe, row.metric) for row in series.itertuples(index=False)
}
label = st.selectbox(
    "metric",
    list(series["label"]),
    key="map_series",
    format_func=lambda label: f"{label} — {_names[label]}",
)
chosen = series[series["label"] == label].iloc[0]
st.caption(definitions.hover(chosen["probe"], chosen["metric"]))
position = None
if chosen["positions"]:
    position = st.selectbox(
        "key position k",
        chosen["positions"],
        key="map_position",
        help="this metric is stored per key position",
    )
values = frames.head_values(
    context.table, chosen["probe"], chosen["metric"], chosen["condition"], position
)
if values.empty:
    st.info("No head has a value for this metric at this position.")
    st.stop()

low, high = float(values["value"].min()), float(values["value"].max())
left, right = st.columns(2)
use_threshold = left.toggle("mark heads at or above a threshold", key="map_use_threshold")
threshold = None
if use_threshold and high > low:
    threshold = left.slider("threshold", low, high, (low + high) / 2, key="map_threshold")
k = right.number_input(
    "top k", min_value=1, max_value=len(values), value=min(10, len(values)), key="map_k"
)

n_layers, n_heads = context.shape
title = label + (f" @ k={position}" if position is not None else "")
ui.head_map_chart(
    figures.head_heatmap(
        values,
        title=title + " — click a head to open it",
        threshold=threshold,
        n_layers=n_layers,
        n_heads=n_heads,
        value_label=definitions.label(chosen["probe"], chosen["metric"]),
        definition=definitions.hover(chosen["probe"], chosen["metric"]),
    ),
    key="map_heatmap",
)
top = frames.top_heads(values, int(k), threshold)
st.markdown(
    f"**Top {len(top)} heads**"
    + (f" with value ≥ {threshold:.4g}" if threshold else "")
    + " — select a row to open that head's page"
)
ui.head_table(top, key="map_top")
