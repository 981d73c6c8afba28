"""Per-token rows (future attention, T-VHD): one prompt's tokens and series."""

from __future__ import annotations

import pandas as pd

from probes.core import schema

FUTURE_PROBE = "future_attention"


def token_rows(table: pd.DataFrame, probe: str, metrics: list[str]) -> pd.DataFrame:
    """prompt, position, token, metric, value of per-token rows (those with a prompt and a
    token)."""
    metrics = [schema.metric(probe, m) for m in metrics]
    rows = table[(table["probe"] == probe) & table["metric"].isin(metrics)]
    rows = rows[rows["position"].notna() & rows["prompt"].notna() & rows["token"].notna()]
    return pd.DataFrame(
        {
            "prompt": rows["prompt"].astype("object"),
            "position": rows["position"].astype("int64"),
            "token": rows["token"].astype("object"),
            "metric": rows["metric"],
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)


def prompt_series(
    tokens: pd.DataFrame, prompt: str
) -> tuple[list[str], dict[str, list[float | None]]]:
    """One prompt's token text and, per metric, its value at every token (None where the
    metric is not defined), from `token_rows` output."""
    rows = tokens[tokens["prompt"] == prompt]
    text_at = dict(zip(rows["position"], rows["token"], strict=True))
    length = max(text_at) + 1 if text_at else 0
    text = [text_at.get(position, "") for position in range(length)]
    series = {}
    for metric, group in rows.groupby("metric", sort=True):
        values = dict(zip(group["position"], group["value"], strict=True))
        series[str(metric)] = [values.get(position) for position in range(length)]
    return text, series
