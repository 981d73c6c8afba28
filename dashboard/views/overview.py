"""Overview: every run in the data directory, and the selected run's provenance."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui
from probes.core import definitions

st.title("headlab")
root = ui.data_dir()
runs = data.runs(root)
if runs.empty:
    ui.no_runs(root)
    st.stop()

st.subheader(f"Runs ({len(runs)})")
st.dataframe(runs.iloc[::-1], hide_index=True, key="overview_runs")

context = ui.run_context()
manifest = context.manifest
st.subheader(f"Run `{context.run_id}`")
model = manifest.get("model") or {}
prompts = manifest.get("prompts") or {}
columns = st.columns([2, 1, 1, 1])
columns[0].metric("model", context.model)
n_layers, n_heads = context.shape
columns[1].metric("layers × heads", f"{n_layers} × {n_heads}")
columns[2].metric("prompts", f"{prompts.get('n_prompts', '?')} × ≤{prompts.get('max_tokens')} tok")
columns[3].metric("rows", f"{len(context.table):,}")

st.markdown("**Probes and parameters**")
st.dataframe(
    [
        {"probe": name, "parameters": ", ".join(f"{k}={v}" for k, v in (params or {}).items())}
        for name, params in (manifest.get("probes") or {}).items()
    ],
    hide_index=True,
    key="overview_probes",
)
st.markdown("**What the run stores**")
counts = (
    context.table.groupby(["probe", "metric"], dropna=False)
    .agg(
        rows=("value", "size"),
        heads=("head", "nunique"),
        positions=("position", "nunique"),
        conditions=("condition", "nunique"),
    )
    .reset_index()
)
counts["meaning"] = [
    definitions.hover(probe, metric)
    for probe, metric in zip(counts["probe"], counts["metric"], strict=True)
]
st.dataframe(counts, hide_index=True, key="overview_counts")

st.markdown("**Provenance**")
git = manifest.get("git") or {}
provenance = {
    "command": manifest.get("command"),
    "created": manifest.get("created"),
    "model source": model.get("source") if isinstance(model, dict) else None,
    "weights sha256": model.get("weights_sha256") if isinstance(model, dict) else None,
    "dtype": model.get("dtype") if isinstance(model, dict) else None,
    "prompt suite": f"{prompts.get('name')} ({prompts.get('source')})",
    "prompt sha256": prompts.get("sha256"),
    "seed": manifest.get("seed"),
    "git": f"{git.get('commit')}" + (" (uncommitted changes)" if git.get("dirty") else ""),
    "versions": ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items()),
}
st.dataframe(
    [{"field": key, "value": str(value)} for key, value in provenance.items()],
    hide_index=True,
    key="overview_provenance",
)
with st.expander("manifest.json"):
    st.json(manifest, expanded=False)
