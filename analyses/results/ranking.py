"""The one head ranking: heads of a results table ordered by a stored metric.

Every ranking in headlab — top-k sweeps, retrieval masking, the induction check, the summaries
and the dashboard's top-k table — orders heads the same way: by value (descending unless asked
otherwise), ties to the lower layer, then the lower head.
"""

from __future__ import annotations

import pandas as pd

from probes.core.errors import HeadlabError

Head = tuple[int, int]  # (layer, head)


class RankingError(HeadlabError, ValueError):
    """The table has no rows, or several rows per head, for the metric asked for."""


def order_heads(rows: pd.DataFrame, ascending: bool = False) -> pd.DataFrame:
    """`rows` (one per head) sorted by value, ties to the lower layer, then head."""
    return rows.sort_values(
        ["value", "layer", "head"], ascending=[ascending, True, True], kind="stable"
    )


def rank_heads(
    table: pd.DataFrame,
    metric: str,
    *,
    probe: str | None = None,
    position: int | None = None,
    condition: str | None = None,
    ascending: bool = False,
    source: str = "the table",
) -> list[tuple[Head, float]]:
    """(head, value) for every head scored by `metric`, best first.

    `probe`, `position` and `condition` narrow the rows; the rows left must hold one value per
    head, else the error names what differs between them. Errors name `source` (e.g. the run).
    """
    rows = table[(table["metric"] == metric) & table["head"].notna()]
    label = "/".join(part for part in (probe, metric) if part)
    if rows.empty:
        known = sorted(table.loc[table["head"].notna(), "metric"].dropna().unique())
        raise RankingError(f"{source} has no per-head rows for {label}; metrics: {known}")
    for column, wanted in (("probe", probe), ("position", position), ("condition", condition)):
        if wanted is not None:
            narrowed = rows[rows[column] == wanted]
            if narrowed.empty:  # the metric is there, the narrowing is what is wrong
                have = sorted(rows[column].dropna().unique().tolist())
                raise RankingError(
                    f"{source}: {metric} has no rows with {column} {wanted!r}; "
                    f"its {column}s: {_brief(have)}"
                )
            rows = narrowed
    if rows.groupby(["layer", "head"]).size().gt(1).any():
        varying = [c for c in ("probe", "position", "condition") if rows[c].nunique() > 1]
        raise RankingError(
            f"{source}: {label} has several rows per head (they differ in "
            f"{varying or 'runs'}); narrow it with probe / position / condition"
        )
    ordered = order_heads(rows, ascending)
    return [
        ((int(layer), int(head)), float(value))
        for layer, head, value in zip(
            ordered["layer"], ordered["head"], ordered["value"], strict=True
        )
    ]


def _brief(values: list, most: int = 12) -> str:
    """A list for a message: all of it when short, else its ends."""
    if not values:
        return "none (the column is empty)"
    if len(values) <= most:
        return ", ".join(map(str, values))
    return f"{', '.join(map(str, values[:3]))}, …, {', '.join(map(str, values[-3:]))}"
