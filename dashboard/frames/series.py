"""Per-head series of a run's table: listing, selecting, ranking, one head's profile, comparing."""

from __future__ import annotations

import pandas as pd

from analyses.results.ranking import order_heads
from probes.core import schema

SERIES_KEYS = ["probe", "metric", "condition"]


def series_label(probe: str, metric: str, condition: object = None) -> str:
    label = f"{probe}/{metric}"
    return f"{label} [{condition}]" if isinstance(condition, str) else label


def head_series(table: pd.DataFrame) -> pd.DataFrame:
    """The per-head series of a table: probe, metric, condition, label, positions (sorted list)."""
    heads = table[table["head"].notna()]
    columns = [*SERIES_KEYS, "label", "positions"]
    if heads.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (probe, metric, condition), group in heads.groupby(SERIES_KEYS, dropna=False, sort=True):
        condition = condition if isinstance(condition, str) else None
        positions = sorted(int(p) for p in group["position"].dropna().unique())
        rows.append([probe, metric, condition, series_label(probe, metric, condition), positions])
    return pd.DataFrame(rows, columns=columns)


def select(
    table: pd.DataFrame,
    probe: str,
    metric: str,
    condition: str | None = None,
    position: int | None = None,
) -> pd.DataFrame:
    """Rows of one series (condition None = no condition; position None = no position).

    NaN counts as None: series tables built with pandas turn a missing condition into NaN.
    """
    if probe in schema.PROBE_METRICS:  # a renamed metric fails here, not as an empty page
        schema.metric(probe, metric)
    condition = condition if isinstance(condition, str) else None
    position = None if position is None or pd.isna(position) else int(position)
    rows = table[(table["probe"] == probe) & (table["metric"] == metric)]
    rows = (
        rows[rows["condition"].isna()]
        if condition is None
        else rows[rows["condition"] == condition]
    )
    rows = rows[rows["position"].isna()] if position is None else rows[rows["position"] == position]
    return rows


def head_values(
    table: pd.DataFrame,
    probe: str,
    metric: str,
    condition: str | None = None,
    position: int | None = None,
) -> pd.DataFrame:
    """layer, head, value of one series; repeated (layer, head) rows are averaged."""
    rows = select(table, probe, metric, condition, position)
    rows = rows[rows["head"].notna()]
    values = rows.groupby(["layer", "head"], as_index=False)["value"].mean()
    return values.astype({"layer": "int64", "head": "int64", "value": "float64"})


def top_heads(values: pd.DataFrame, k: int, threshold: float | None = None) -> pd.DataFrame:
    """The k highest heads (at or above `threshold` if given), ranked 1..k; NaN is never ranked."""
    ranked = values.dropna(subset=["value"])
    if threshold is not None:
        ranked = ranked[ranked["value"] >= threshold]
    ranked = order_heads(ranked).head(k)
    ranked = ranked.assign(
        rank=range(1, len(ranked) + 1),
        name=[
            f"L{layer}H{head}" for layer, head in zip(ranked["layer"], ranked["head"], strict=True)
        ],
    )
    return ranked[["rank", "name", "layer", "head", "value"]].reset_index(drop=True)


def head_profile(table: pd.DataFrame, layer: int, head: int) -> pd.DataFrame:
    """One head's value on every per-head series and position, with its rank among all heads.

    rank 1 = highest value of that series (ties share the best rank); percentile: see
    `percentile`.
    """
    heads = table[table["head"].notna()]
    keys = [*SERIES_KEYS, "position"]
    columns = [*keys, "label", "value", "rank", "n_heads", "percentile"]
    rows = []
    for key, group in heads.groupby(keys, dropna=False, sort=True):
        probe, metric, condition, position = key
        values = group.groupby(["layer", "head"])["value"].mean().dropna()
        if (layer, head) not in values.index:
            continue
        value = values.loc[(layer, head)]
        rows.append(
            [
                probe,
                metric,
                condition if isinstance(condition, str) else None,
                None if pd.isna(position) else int(position),
                series_label(probe, metric, condition),
                value,
                int((values > value).sum()) + 1,
                len(values),
                percentile(values, value),
            ]
        )
    return pd.DataFrame(rows, columns=columns)


def percentile(values: pd.Series, value: float) -> float:
    """Where `value` sits among `values`: 100 = the highest head, 0 = the lowest; tied heads get
    their mean position, so a metric on which every head scores the same puts each at 50."""
    if len(values) < 2:
        return 50.0
    below, equal = int((values < value).sum()), int((values == value).sum())
    return float((below + (equal - 1) / 2) / (len(values) - 1) * 100)


def paired_heads(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Heads scored in both value tables: layer, head, a, b."""
    merged = a.merge(b, on=["layer", "head"], suffixes=("_a", "_b"))
    return merged.rename(columns={"value_a": "a", "value_b": "b"})


def layer_profile(values: pd.DataFrame) -> pd.DataFrame:
    """Mean and max over heads per layer, with depth = layer / (n_layers − 1) so models of
    different depth line up."""
    profile = values.groupby("layer", as_index=False)["value"].agg(["mean", "max"])
    last = max(int(profile["layer"].max()), 1) if not profile.empty else 1
    return profile.assign(depth=profile["layer"] / last)


def overall(
    table: pd.DataFrame, probe: str, metric: str, condition: str = schema.OVERALL_CONDITION
) -> float | None:
    rows = select(table, probe, metric, condition)
    return None if rows.empty else float(rows["value"].mean())


def in_probe_order(series: pd.DataFrame, probes: list[str]) -> pd.DataFrame:
    """`series` with the probes of the run's scan first (in the manifest's order), so the first
    metric a view offers is the scan's own rather than the alphabetically first."""
    rank = {probe: index for index, probe in enumerate(probes)}
    key = series["probe"].map(lambda probe: rank.get(probe, len(rank)))
    return series.assign(_order=key).sort_values("_order", kind="stable").drop(columns="_order")


def settings_differences(a: dict, b: dict, probe: str) -> list[str]:
    """What differs between two runs' manifests that changes `probe`'s numbers: its parameters,
    the prompt suite and its length cap, the dtype. Model differences are stated elsewhere."""

    def prompts(manifest: dict) -> dict:
        return manifest.get("prompts") or {}

    def model(manifest: dict) -> dict:
        found = manifest.get("model")
        return found if isinstance(found, dict) else {}

    checks = {
        f"{probe} parameters": (
            (a.get("probes") or {}).get(probe),
            (b.get("probes") or {}).get(probe),
        ),
        "prompt suite": (prompts(a).get("sha256"), prompts(b).get("sha256")),
        "max tokens": (prompts(a).get("max_tokens"), prompts(b).get("max_tokens")),
        "dtype": (model(a).get("dtype"), model(b).get("dtype")),
    }
    return [f"{name}: {left!r} vs {right!r}" for name, (left, right) in checks.items()
            if left != right]  # fmt: skip
