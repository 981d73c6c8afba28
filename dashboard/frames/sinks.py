"""Attention sinks: Sink_k^ε per layer, α over positions, massive activations."""

from __future__ import annotations

import pandas as pd

from probes.core import schema


def sink_percent_by_layer(table: pd.DataFrame, positions: list[int]) -> pd.DataFrame:
    """Sink_k^ε per layer in percent (mean over heads of the per-sequence sink rate) at each k."""
    rows = table[
        (table["probe"] == "sink") & (table["metric"] == schema.metric("sink", "sink_rate"))
    ]
    rows = rows[rows["position"].isin(positions) & rows["head"].notna()]
    percent = rows.groupby(["layer", "position"], as_index=False)["value"].mean()
    percent["value"] *= 100
    return percent.astype({"layer": "int64", "position": "int64"})


def sink_map(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """layer × key position of a per-position sink metric, averaged over heads (α, or
    Sink_k^ε in percent for sink_rate): where in the sequence each layer's sinks are."""
    rows = table[(table["probe"] == "sink") & (table["metric"] == schema.metric("sink", metric))]
    rows = rows[rows["position"].notna() & rows["head"].notna()]
    mean = rows.groupby(["layer", "position"], as_index=False)["value"].mean()
    if metric == "sink_rate":
        mean["value"] *= 100
    return mean.astype({"layer": "int64", "position": "int64"})


def massive_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """layer, condition (sink_token / other_tokens), value of the massive-activation ratio."""
    rows = table[(table["probe"] == "sink") & (table["metric"] == "massive_ratio")]
    return rows[["layer", "condition", "value"]].astype({"layer": "int64"}).reset_index(drop=True)
