"""Sweeps (analyses/sweeps/runner.py): conditions decoded by schema.SweepCondition, curves."""

from __future__ import annotations

import pandas as pd

from dashboard.frames.series import overall
from probes.core import schema

SWEEP_PROBE = schema.SWEEP_PROBE


SWEEP_COLUMNS = [
    "metric",
    "kind",
    "strength",
    "selection",
    "k",
    "ranking",
    "seed",
    "heads",
    "layer",
    "head",
    "value",
]


def parse_condition(condition: str) -> dict[str, object]:
    """A sweep unit's condition, e.g. "zero|top4:sink/alpha@0", "zero|random4:…:seed1",
    "scale=2|heads:L3H1,L5H2", "mean", "clean", split into its parts."""
    decoded = schema.SweepCondition.decode(condition)
    return {column: getattr(decoded, column) for column in SWEEP_COLUMNS[1:8]}


def sweep_units(table: pd.DataFrame) -> pd.DataFrame:
    """Sweep rows with their condition parsed (one row per unit and metric)."""
    rows = table[table["probe"] == SWEEP_PROBE]
    if rows.empty:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    parsed = {c: parse_condition(c) for c in rows["condition"].dropna().unique()}
    records = [
        {
            **parsed.get(condition, {}),
            "metric": metric,
            "layer": layer,
            "head": head,
            "value": value,
        }
        for metric, condition, layer, head, value in rows[
            ["metric", "condition", "layer", "head", "value"]
        ].itertuples(index=False)
    ]
    return pd.DataFrame(records, columns=SWEEP_COLUMNS)


def clean_value(table: pd.DataFrame, metric: str) -> float | None:
    """The task measure without intervention (condition "clean"); None for .harm metrics."""
    return overall(table, SWEEP_PROBE, metric.removesuffix(".harm"), schema.CLEAN_CONDITION)


def topk_curves(units: pd.DataFrame, metric: str, ranking: str, mode: str) -> pd.DataFrame:
    """k, selection ("top-k" / "random-k"), seed, value of one top-k-vs-random experiment."""
    rows = units[
        (units["metric"] == metric)
        & (units["ranking"] == ranking)
        & (units["kind"] == mode)
        & units["selection"].isin(["top", "random"])
        & units["strength"].isna()
    ]
    return pd.DataFrame(
        {
            "k": rows["k"].astype("int64"),
            "selection": rows["selection"] + "-k",
            "seed": rows["seed"],
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)


def strength_curves(units: pd.DataFrame, metric: str) -> pd.DataFrame:
    """strength, series (kind and heads), value of every strength grid of one metric."""
    rows = units[(units["metric"] == metric) & units["strength"].notna()]
    where = rows["heads"].fillna(
        rows["selection"].fillna("")
        + rows["k"].astype("Int64").astype("string").fillna("")
        + ":"
        + rows["ranking"].fillna("")
    )
    return pd.DataFrame(
        {
            "strength": rows["strength"].astype("float64"),
            "series": rows["kind"] + " " + where,
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)
