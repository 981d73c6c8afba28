"""Compare: one metric in two runs (or two models) side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analyses.results.store import StoreError
from dashboard import data, figures, frames, ui
from probes.core import definitions

st.title("Compare runs")
root = ui.data_dir()
ids = ui.newest_first(root)
if len(ids) < 2:
    if not ids:
        ui.no_runs(root)
    else:
        st.info("Comparing needs two runs; make another, e.g. on a second model:")
        st.code(
            f"{ui.scan_command(root, 'sink')} --model gemma-3-270m --max-tokens 128",
            language="bash",
        )
    st.stop()

current = st.session_state.get(ui.RUN_KEY, ids[0])
left, right = st.columns(2)
run_a = left.selectbox(
    "run A", ids, index=ids.index(current) if current in ids else 0, key="compare_a"
)
run_b = right.selectbox("run B", ids, index=1 if ids[0] == run_a else 0, key="compare_b")
try:
    tables = {run: data.results(root, run) for run in (run_a, run_b)}
    manifests = {run: data.manifest(root, run) for run in (run_a, run_b)}
except StoreError as error:
    st.error(str(error))
    st.stop()

series = frames.head_series(tables[run_a]).merge(
    frames.head_series(tables[run_b])[["label"]], on="label"
)
series = frames.in_probe_order(series, list(manifests[run_a].get("probes") or {}))
if series.empty:
    st.info("The two runs share no per-head metric.")
    st.stop()
label = st.selectbox("metric", list(series["label"]), key="compare_series")
chosen = series[series["label"] == label].iloc[0]
position = None
if chosen["positions"]:
    position = st.selectbox("key position k", chosen["positions"], key="compare_position")
values = {
    run: frames.head_values(
        tables[run], chosen["probe"], chosen["metric"], chosen["condition"], position
    )
    for run in (run_a, run_b)
}


def name(run: str) -> str:
    model = manifests[run].get("model") or {}
    return f"{run} ({model.get('model') if isinstance(model, dict) else model})"


differences = frames.settings_differences(manifests[run_a], manifests[run_b], chosen["probe"])
if differences:
    st.warning("The runs used different settings, so differences below may come from them: "
               + "; ".join(differences))  # fmt: skip
# one colour scale for both maps, so the same colour is the same number
both = pd.concat([values[run_a]["value"], values[run_b]["value"]]).dropna()
low, high = (float(both.min()), float(both.max())) if len(both) else (None, None)
if low is not None and high is not None and low < 0 < high:
    low, high = -max(-low, high), max(-low, high)
st.caption(
    definitions.hover(chosen["probe"], chosen["metric"]) + " Both maps share one colour scale."
)
columns = st.columns(2)
for column, run, side in zip(columns, (run_a, run_b), "ab", strict=True):
    with column:
        ui.head_map_chart(
            figures.head_heatmap(
                values[run],
                title=name(run),
                zmin=low,
                zmax=high,
                value_label=definitions.label(chosen["probe"], chosen["metric"]),
            ),
            key=f"compare_map_{side}",
            run=run,
        )

paired = frames.paired_heads(values[run_a], values[run_b])
same_shape = (
    values[run_a][["layer", "head"]].max().tolist()
    == values[run_b][["layer", "head"]].max().tolist()
)
if same_shape and len(paired) > 1:
    pearson = paired["a"].corr(paired["b"])
    spearman = paired["a"].rank().corr(paired["b"].rank())
    st.caption(
        f"{len(paired)} heads in both runs: Pearson r = {pearson:.3f}, "
        f"Spearman ρ = {spearman:.3f}, mean |A − B| = "
        f"{(paired['a'] - paired['b']).abs().mean():.4g}"
    )
    st.plotly_chart(
        figures.compare_scatter(
            paired, f"A: {run_a}", f"B: {run_b}", title=f"{label}: head by head"
        ),
        key="compare_scatter",
    )
else:
    st.caption(
        "The runs have different layer × head grids (different models): compare them "
        "by relative depth below."
    )
statistic = st.radio("per layer", ["mean", "max"], horizontal=True, key="compare_statistic")
profiles = {name(run): frames.layer_profile(values[run]) for run in (run_a, run_b)}
st.plotly_chart(figures.layer_profiles(profiles, statistic), key="compare_profiles")
summary = pd.DataFrame(
    [
        {"run": name(run), "heads": len(v), "mean": v["value"].mean(), "max": v["value"].max()}
        for run, v in values.items()
    ]
)
st.dataframe(summary, hide_index=True, key="compare_summary")
