"""Retrieval heads (probes/families/retrieval.py): NIAH grids, masking curves."""

from __future__ import annotations

import pandas as pd

from probes.core import schema

RETRIEVAL_PROBE = "retrieval"


def niah_grid(table: pd.DataFrame, metric: str = "niah_accuracy") -> pd.DataFrame:
    """length, depth, value of a NIAH metric stored per (length, depth) cell."""
    metric = schema.metric(RETRIEVAL_PROBE, metric)
    rows = table[(table["probe"] == RETRIEVAL_PROBE) & (table["metric"] == metric)]
    rows = rows[rows["length"].notna() & rows["depth"].notna()]
    return pd.DataFrame(
        {
            "length": rows["length"].astype("int64"),
            "depth": rows["depth"].astype("int64"),
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)


MASKING_TABLE = schema.MASKING_TABLE


NIAH_SAMPLES_TABLE = schema.NIAH_SAMPLES_TABLE


def masking_curves(summary: pd.DataFrame, mode: str, measure: str = "accuracy") -> pd.DataFrame:
    """k, selection ("top-k" / "random-k"), seed, value from the masking side table (one row
    per condition: selection none / top / random, k, mode, seed, accuracy, recall)."""
    rows = summary[(summary["mode"] == mode) & summary["selection"].isin(["top", "random"])]
    return pd.DataFrame(
        {
            "k": rows["k"].astype("int64"),
            "selection": rows["selection"] + "-k",
            "seed": rows["seed"],
            "value": rows[measure].astype("float64"),
        }
    ).reset_index(drop=True)


def unmasked(summary: pd.DataFrame, measure: str = "accuracy") -> float | None:
    rows = summary[summary["selection"] == "none"]
    return None if rows.empty else float(rows[measure].iloc[0])
