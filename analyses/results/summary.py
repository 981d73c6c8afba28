"""Summaries of a results table: the headline figures of each probe (what a user looks for
first: Sink_1^ε, NIAH accuracy, the share of retrieval heads, pattern classes), then the top
heads per metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from analyses.results.ranking import order_heads
from probes.core import schema

# Per-position metrics are summarised at the first token unless asked otherwise.
HEADLINE_POSITION = 0
# Wu et al. 2024 call a head whose retrieval score exceeds 0.1 a retrieval head.
RETRIEVAL_HEAD_SCORE = 0.1


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


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _heads_of(rows: pd.DataFrame) -> int:
    return len(rows[["layer", "head"]].drop_duplicates())


def niah_lines(rows: pd.DataFrame, params: Mapping[str, Any] | None = None) -> list[str]:
    """NIAH accuracy of a retrieval run: overall (with the samples, when the probe's `params`
    say how many there were), by context length and by needle depth (each the mean over its
    cells; every cell holds the same number of samples)."""
    accuracy = rows[rows["metric"] == "niah_accuracy"]
    overall = accuracy[accuracy["condition"] == schema.OVERALL_CONDITION]["value"]
    cells = accuracy[accuracy["length"].notna() & accuracy["depth"].notna()]
    if overall.empty:
        return []
    counted = ""
    if params and {"lengths", "depths", "needles_per_cell"} <= set(params):
        n = len(params["lengths"]) * len(params["depths"]) * int(params["needles_per_cell"])
        threshold = params.get("recall_threshold")
        gate = f"; ROUGE-1 recall > {threshold:g}" if threshold is not None else ""
        counted = f" ({round(overall.iloc[0] * n)} of {n} samples answered{gate})"
    lines = [f"NIAH accuracy {_percent(overall.iloc[0])}{counted}"]
    by = (("length", "by length (tokens)"), ("depth", "by needle depth (% into the haystack)"))
    for column, label in by:
        means = cells.groupby(column, sort=True)["value"].mean()
        if len(means) > 1:
            parts = ", ".join(f"{int(key)}: {_percent(v)}" for key, v in means.items())
            lines.append(f"  {label}: {parts}")
    return lines


def retrieval_lines(rows: pd.DataFrame, k: int = 3) -> list[str]:
    """How many heads are retrieval heads (score > 0.1), and the strongest."""
    scores = rows[(rows["metric"] == "retrieval_score") & rows["head"].notna()]
    if scores.empty:
        if (rows["metric"] == "niah_accuracy").any():
            return ["retrieval scores: none (the model answered no sample)"]
        return []
    many = int((scores["value"] > RETRIEVAL_HEAD_SCORE).sum())
    top = order_heads(scores).head(k)
    best = ", ".join(f"L{r.layer}H{r.head}={r.value:.3g}" for r in top.itertuples())
    return [
        f"retrieval heads (score > {RETRIEVAL_HEAD_SCORE:g}): {many} of {len(scores)} "
        f"({100 * many / len(scores):.1f}%); strongest {best}"
    ]


def sink_lines(rows: pd.DataFrame, params: Mapping[str, Any] | None = None) -> list[str]:
    """Sink_1^ε: the share of (sequence, head) pairs whose first token draws α > ε."""
    rate = rows[(rows["metric"] == "sink_rate") & (rows["position"] == HEADLINE_POSITION)]
    if rate.empty:
        return []
    epsilon = f" > {params['epsilon']:g}" if params and "epsilon" in params else " > ε"
    return [
        f"Sink_1^ε: {rate['value'].mean() * 100:.1f}% of heads sink on the first token "
        f"(α{epsilon}, per sequence)"
    ]


def pattern_class_lines(rows: pd.DataFrame) -> list[str]:
    """How many heads fall in each pattern class, most common first."""
    classes = rows[(rows["metric"] == "pattern_class") & rows["head"].notna()]
    if classes.empty:
        return []
    counts = classes["condition"].value_counts(sort=False).sort_index()
    counts = counts.sort_values(ascending=False, kind="stable")
    parts = ", ".join(f"{count} {name}" for name, count in counts.items())
    return [f"pattern classes: {parts} (of {_heads_of(classes)} heads)"]


def format_headlines(
    table: pd.DataFrame, probe_params: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The figures a user looks for first, per model and probe present; `probe_params` (a
    manifest's "probes") adds what the rows do not hold (ε, the number of NIAH samples)."""
    params = probe_params or {}
    lines = []
    for model, rows in table.groupby("model", sort=True):
        found = [
            *sink_lines(rows[rows["probe"] == "sink"], params.get("sink")),
            *niah_lines(rows[rows["probe"] == "retrieval"], params.get("retrieval")),
            *retrieval_lines(rows[rows["probe"] == "retrieval"]),
            *pattern_class_lines(rows[rows["probe"] == "pattern_class"]),
        ]
        lines += [f"  {model}  {line}" for line in found]
    return "\n".join(lines)


def format_top_heads(table: pd.DataFrame, k: int = 5) -> str:
    """The k best heads of every metric, and the layer-level metrics' maximum and median."""
    keys = ["model", "probe", "metric", "condition"]
    entries: list[tuple[str, str, str]] = []
    for (model, probe, metric, condition), group in top_heads(table, k).groupby(
        keys, dropna=False, sort=True
    ):
        heads = ", ".join(f"L{row.layer}H{row.head}={row.value:.3g}" for row in group.itertuples())
        entries.append((model, _label(probe, metric, condition), heads))
    layer_rows = table[table["head"].isna() & table["layer"].notna()]
    for (model, probe, metric, condition), group in layer_rows.groupby(
        keys, dropna=False, sort=True
    ):
        best = group.loc[group["value"].idxmax()]
        entries.append((
            model,
            _label(probe, metric, condition),
            f"max {best['value']:.4g} at layer {best['layer']} "
            f"(median over layers {group['value'].median():.4g})",
        ))  # fmt: skip
    width = max((len(label) for _, label, _ in entries), default=0)
    return "\n".join(f"  {model}  {label:<{width}}  {text}" for model, label, text in entries)


def _label(probe: str, metric: str, condition: Any) -> str:
    return f"{probe}/{metric}" + (f" [{condition}]" if isinstance(condition, str) else "")
