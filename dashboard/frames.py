"""Pure reshapes of a run's tidy table into what one view draws (no Streamlit, no plotting).

A "series" is one (probe, metric, condition) of per-head rows; per-position metrics (α at key k)
additionally pick a position. Heads that were not scored have no row; NaN stays NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    rank 1 = highest value of that series; percentile = share of heads at or below this one.
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
                float((values <= value).mean() * 100),
            ]
        )
    return pd.DataFrame(rows, columns=columns)


# ---- stored attention patterns (probes/families/pattern.py) ----

PATTERN_PROBE = "pattern"  # its rows are pooled patterns, not per-head scores
PATTERN_METRIC = schema.metric(PATTERN_PROBE, "attention")


@dataclass(frozen=True)
class PromptTokens:
    """A prompt stored by the pattern probe: its token text and where each block starts."""

    prompt: str
    text: tuple[str, ...]
    block_starts: tuple[int, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.block_starts)

    def block_text(self, block: int) -> str:
        end = self.block_starts[block + 1] if block + 1 < self.n_blocks else len(self.text)
        return "".join(self.text[self.block_starts[block] : end])


def pattern_prompts(prompts: pd.DataFrame) -> dict[str, PromptTokens]:
    """The pattern probe's prompts (its side table "pattern_prompts": prompt, ids, text,
    block_starts), by prompt id."""
    found = {}
    for record in prompts.itertuples(index=False):
        text = record.text if record.text is not None else [f"<{i}>" for i in record.ids]
        found[str(record.prompt)] = PromptTokens(
            str(record.prompt),
            tuple(str(t) for t in text),
            tuple(int(b) for b in record.block_starts),
        )
    return found


def pattern_cells(table: pd.DataFrame, layer: int, head: int, prompt: str) -> pd.DataFrame:
    """query_block, key_block, value of one head's pooled pattern on one prompt."""
    rows = table[
        (table["probe"] == PATTERN_PROBE)
        & (table["metric"] == PATTERN_METRIC)
        & (table["layer"] == layer)
        & (table["head"] == head)
        & (table["prompt"] == prompt)
    ]
    return pd.DataFrame(
        {
            "query_block": rows["position"].astype("int64"),
            "key_block": rows["key_position"].astype("int64"),
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)


def pattern_matrix(cells: pd.DataFrame, n_blocks: int) -> list[list[float | None]]:
    """query_block × key_block matrix of pooled attention; blocks not stored (above the causal
    diagonal) are None, so the figure leaves them blank rather than drawing zeros."""
    matrix: list[list[float | None]] = [[None] * n_blocks for _ in range(n_blocks)]
    for query, key, value in cells[["query_block", "key_block", "value"]].itertuples(index=False):
        matrix[int(query)][int(key)] = float(value)
    return matrix


# ---- sinks ----


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


# ---- compare ----


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


# ---- retrieval (probes/families/retrieval.py) ----

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


def overall(
    table: pd.DataFrame, probe: str, metric: str, condition: str = schema.OVERALL_CONDITION
) -> float | None:
    rows = select(table, probe, metric, condition)
    return None if rows.empty else float(rows["value"].mean())


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


# ---- sweeps (analyses/sweeps/runner.py; conditions encoded by schema.SweepCondition) ----

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


# ---- future attention (probes/families/future_attention.py) ----

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


def in_probe_order(series: pd.DataFrame, probes: list[str]) -> pd.DataFrame:
    """`series` with the probes of the run's scan first (in the manifest's order), so the first
    metric a view offers is the scan's own rather than the alphabetically first."""
    rank = {probe: index for index, probe in enumerate(probes)}
    key = series["probe"].map(lambda probe: rank.get(probe, len(rank)))
    return series.assign(_order=key).sort_values("_order", kind="stable").drop(columns="_order")


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
