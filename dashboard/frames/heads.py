"""One head across a model's runs: its scores with definitions and percentiles, its classes, the
effects of ablating it, and the heads whose profile is most like its own (the head page)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dashboard.frames.series import head_profile
from probes.core import definitions, schema

# Metrics whose rows carry a label in `condition` (the value is a score behind the label).
CATEGORICAL = {("pattern_class", "pattern_class"), ("future_attention", "locality")}
EFFECT_PROBES = (schema.SWEEP_PROBE, schema.ATTRIBUTION_PROBE)
PROFILE_COLUMNS = ["run", "metric", "label", "position", "value", "rank", "n_heads",
                   "percentile", "definition"]  # fmt: skip


def _numeric(table: pd.DataFrame) -> pd.DataFrame:
    keys = list(zip(table["probe"], table["metric"], strict=True))
    categorical = pd.Series([key in CATEGORICAL for key in keys], index=table.index, dtype=bool)
    return table[~categorical & ~table["probe"].isin(EFFECT_PROBES) & table["head"].notna()]


def profile(tables: Mapping[str, pd.DataFrame], layer: int, head: int) -> pd.DataFrame:
    """The head's value, rank and percentile on every numeric per-head metric of every run,
    with each metric's definition (per-position metrics keep their key position)."""
    frames = []
    for run, table in tables.items():
        rows = head_profile(_numeric(table), layer, head)
        if rows.empty:
            continue
        keys = list(zip(rows["probe"], rows["metric"], strict=True))
        frames.append(
            rows.assign(
                run=run,
                label=[definitions.label(*key) for key in keys],
                metric=rows["probe"] + "/" + rows["metric"],
                definition=[definitions.hover(*key) for key in keys],
            )
        )
    if not frames:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[PROFILE_COLUMNS]


def classes(tables: Mapping[str, pd.DataFrame], layer: int, head: int) -> dict[str, str]:
    """The head's labels ("pattern class" → "sink", "local / global" → "global"), newest run
    first wins (tables are given newest first)."""
    found: dict[str, str] = {}
    for table in tables.values():
        mine = table[(table["layer"] == layer) & (table["head"] == head)]
        for probe, metric in CATEGORICAL:
            rows = mine[(mine["probe"] == probe) & (mine["metric"] == metric)]
            name = definitions.label(probe, metric)
            if not rows.empty and name not in found:
                found[name] = str(rows["condition"].iloc[0])
    return found


def effects(tables: Mapping[str, pd.DataFrame], layer: int, head: int) -> pd.DataFrame:
    """Sweep effects of this head alone (exact single-head ablations, attribution estimates),
    each with its rank among the heads of the same experiment; harm > 0 = the edit hurt."""
    columns = ["run", "experiment", "measure", "value", "rank", "n_heads", "definition"]
    rows = []
    for run, table in tables.items():
        per_head = table[table["probe"].isin(EFFECT_PROBES) & table["head"].notna()]
        for (probe, metric, condition), group in per_head.groupby(
            ["probe", "metric", "condition"], dropna=False, sort=True
        ):
            values = group.groupby(["layer", "head"])["value"].mean().dropna()
            if (layer, head) not in values.index:
                continue
            value = float(values.loc[(layer, head)])
            how = "attribution estimate" if probe == schema.ATTRIBUTION_PROBE else "ablated alone"
            kind = str(condition).split("|")[0] if isinstance(condition, str) else ""
            rows.append([run, f"{how} ({kind})" if kind else how, metric, value,
                         int((values > value).sum()) + 1, len(values),
                         definitions.hover(probe, metric)])  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def similar_heads(table: pd.DataFrame, layer: int, head: int, n: int = 5) -> pd.DataFrame:
    """The n heads whose percentiles across the run's numeric per-head metrics correlate best
    with this head's (per-position metrics at k = 0); columns name, layer, head, similarity."""
    columns = ["name", "layer", "head", "similarity"]
    numeric = _numeric(table)
    numeric = numeric[numeric["position"].isna() | (numeric["position"] == 0)]
    if numeric.empty:
        return pd.DataFrame(columns=columns)
    grid = numeric.pivot_table(
        index=["layer", "head"], columns=["probe", "metric", "position"], values="value",
        aggfunc="mean", dropna=False,
    )  # fmt: skip
    grid = grid.dropna(axis=1, how="all").rank(pct=True)
    if (layer, head) not in grid.index or grid.shape[1] < 2:
        return pd.DataFrame(columns=columns)
    centred = grid.sub(grid.mean(axis=1), axis=0).fillna(0.0)
    norms = np.linalg.norm(centred.to_numpy(), axis=1)
    mine = centred.loc[(layer, head)].to_numpy()
    similarity = centred.to_numpy() @ mine / np.maximum(norms * np.linalg.norm(mine), 1e-12)
    ranked = pd.DataFrame(
        {"layer": grid.index.get_level_values(0).astype(int),
         "head": grid.index.get_level_values(1).astype(int), "similarity": similarity}
    )  # fmt: skip
    ranked = ranked[~((ranked["layer"] == layer) & (ranked["head"] == head))]
    ranked = ranked.sort_values(["similarity", "layer", "head"], ascending=[False, True, True])
    ranked = ranked.head(n).assign(
        name=lambda f: [f"L{a}H{b}" for a, b in zip(f["layer"], f["head"], strict=True)]
    )
    return ranked[columns].reset_index(drop=True)
