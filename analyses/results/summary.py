"""Summaries of a results table: top heads per metric, Sink_k^ε."""

from __future__ import annotations

import pandas as pd

from analyses.results.ranking import order_heads

# Per-position metrics are summarised at the first token unless asked otherwise.
HEADLINE_POSITION = 0


def per_head(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that score one head, with per-position metrics reduced to their headline position."""
    # Pattern snapshots (probe "pattern") are pooled attention maps for viewing, not scores.
    heads = table[table["head"].notna() & (table["probe"] != "pattern")]
    positional = heads["position"].notna()
    return heads[~positional | (heads["position"] == HEADLINE_POSITION)]


def top_heads(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The k highest-scoring heads of every (model, probe, metric, condition)."""
    heads = per_head(table)
    keys = ["model", "probe", "metric", "condition"]
    ranked = order_heads(heads)
    top = ranked.groupby(keys, dropna=False, sort=True).head(k)
    return top.sort_values([*keys, "value"], ascending=[True] * 4 + [False])[
        [*keys, "layer", "head", "position", "value"]
    ]


def sink_percentage(table: pd.DataFrame, position: int = 0) -> pd.Series:
    """Sink_k^ε (Gu et al.) in percent per model: mean over heads of the per-sequence sink rate."""
    rows = table[(table["metric"] == "sink_rate") & (table["position"] == position)]
    return rows.groupby("model")["value"].mean() * 100


def format_top_heads(table: pd.DataFrame, k: int = 5) -> str:
    lines = []
    for (model, probe, metric, condition), group in top_heads(table, k).groupby(
        ["model", "probe", "metric", "condition"], dropna=False, sort=True
    ):
        label = f"{probe}/{metric}" + (f" [{condition}]" if isinstance(condition, str) else "")
        heads = ", ".join(f"L{row.layer}H{row.head}={row.value:.3g}" for row in group.itertuples())
        lines.append(f"  {model}  {label:<28} {heads}")
    layer_rows = table[table["head"].isna() & table["layer"].notna()]
    for (model, probe, metric, condition), group in layer_rows.groupby(
        ["model", "probe", "metric", "condition"], dropna=False, sort=True
    ):
        label = f"{probe}/{metric}" + (f" [{condition}]" if isinstance(condition, str) else "")
        best = group.loc[group["value"].idxmax()]
        lines.append(
            f"  {model}  {label:<28} max {best['value']:.4g} at layer {best['layer']} "
            f"(median over layers {group['value'].median():.4g})"
        )
    for model, percent in sink_percentage(table).items():
        lines.append(f"  {model}  Sink_1^ε (first token)       {percent:.1f}% of heads")
    return "\n".join(lines)
