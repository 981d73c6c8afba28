"""Stored runs and per-head values (torch-free): `runs`, `read`, `manifest`, `head_values`,
`top_heads`. Reads go through `analyses.results.store`, rankings through its `ranking`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analyses.results import ranking, store
from dashboard import frames
from probes.core.errors import ConfigError
from probes.core.heads import Head
from probes.core.options import check_positive


def runs(data: str | Path = "data") -> pd.DataFrame:
    """Every run under `data/runs/`, oldest first: run_id, status ("ok" or why it cannot be
    read), kind, model, probes, prompts, created, rows."""
    return store.list_runs(data)


def _run_id(data: str | Path, run: str) -> str:
    return store.latest_run(data) if run == "latest" else run


def read(
    run: str = "latest", *, data: str | Path = "data", table: str | None = None
) -> pd.DataFrame:
    """The results of run `run` ("latest": the newest readable one) as one tidy DataFrame, or
    its side table `table` (e.g. "niah_samples", "pattern_prompts")."""
    run_id = _run_id(data, run)
    if table is not None:
        return store.read_side_table(data, run_id, table)
    return store.load_run(data, run_id)


def manifest(run: str = "latest", *, data: str | Path = "data") -> dict[str, Any]:
    """The manifest of run `run`: model provenance, config, prompts, probe parameters, timings."""
    return store.read_manifest(data, _run_id(data, run))


def series(
    table: pd.DataFrame,
    metric: str,
    probe: str | None = None,
    position: int | None = None,
    condition: str | None = None,
) -> tuple[str, int | None, str | None]:
    """(probe, position, condition) of the one per-head series of `metric` in `table`: the
    probe is found when one probe has the metric; a per-position metric needs `position`, a
    metric stored only under conditions needs `condition`. Errors say what to pass."""
    rows = table[(table["metric"] == metric) & table["head"].notna()]
    if probe is not None:
        rows = rows[rows["probe"] == probe]
    if rows.empty:
        of = f" of probe {probe!r}" if probe else ""
        known = sorted(table.loc[table["head"].notna(), "metric"].dropna().unique())
        raise ConfigError(f"no per-head rows for metric {metric!r}{of}; the table has {known}")
    found = sorted(rows["probe"].dropna().unique())
    if len(found) > 1:
        raise ConfigError(f"metric {metric!r} comes from probes {found}: pass probe=")
    positions = sorted(int(p) for p in rows["position"].dropna().unique())
    if position is None and positions:
        raise ConfigError(
            f"metric {metric!r} is stored per key position ({positions[0]}…{positions[-1]}): "
            f"pass position=, e.g. position={positions[0]}"
        )
    conditions = sorted(rows["condition"].dropna().unique())
    if condition is None and conditions and rows["condition"].notna().all():
        raise ConfigError(
            f"metric {metric!r} is stored per condition {conditions}: pass condition="
        )
    return str(found[0]), position, condition


def head_values(
    table: pd.DataFrame,
    metric: str,
    *,
    probe: str | None = None,
    position: int | None = None,
    condition: str | None = None,
) -> pd.DataFrame:
    """layer, head, value of one per-head metric (repeated heads, e.g. of several runs, are
    averaged); see `series` for when probe / position / condition are needed."""
    probe, position, condition = series(table, metric, probe, position, condition)
    return frames.head_values(table, probe, metric, condition, position)


def top_heads(
    table: pd.DataFrame,
    metric: str,
    k: int = 10,
    *,
    probe: str | None = None,
    position: int | None = None,
    condition: str | None = None,
    ascending: bool = False,
) -> pd.DataFrame:
    """The `k` heads highest on `metric` (lowest if `ascending`), in headlab's one ranking
    (ties to the lower layer, then head): rank, name ("L18H8"), layer, head, value. The names
    go straight to `hl.ablate(model, top["name"])`."""
    check_positive("k", k)
    probe, position, condition = series(table, metric, probe, position, condition)
    ranked = ranking.rank_heads(
        table, metric, probe=probe, position=position, condition=condition, ascending=ascending
    )[:k]
    return pd.DataFrame(
        {
            "rank": range(1, len(ranked) + 1),
            "name": [str(Head(*head)) for head, _ in ranked],
            "layer": [layer for (layer, _), _ in ranked],
            "head": [head for (_, head), _ in ranked],
            "value": [value for _, value in ranked],
        }
    )
