"""A sweep's chunk files: one atomic parquet part per finished chunk of units, the rows each
unit writes, and the merge of all parts into sweep-NAME.parquet once every unit is done.
Parts are the unit of resumption: a rerun skips every unit whose part exists."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from analyses.results import contents, store
from analyses.sweeps.plan import Unit
from analyses.sweeps.tasks import Task
from probes.core import schema

PARTS_SUFFIX = contents.SWEEP_PARTS_SUFFIX


def table_path(run_directory: Path, name: str) -> Path:
    return run_directory / f"sweep-{name}.parquet"


def part_units(path: Path) -> list[str]:
    """The unit ids a part records; a file that is no sweep part (foreign, truncated, another
    version) is an error naming it."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as error:
        raise store.StoreError(
            f"sweep part {path} is not a readable parquet file: {error}"
        ) from None
    try:
        units = json.loads(metadata[store.MANIFEST_KEY])["units"]
    except (KeyError, ValueError, TypeError):
        units = None
    if metadata.get(store.SCHEMA_KEY) != str(store.SCHEMA_VERSION).encode() or not isinstance(
        units, list
    ):
        raise store.StoreError(
            f"{path} is not a part of this sweep (no headlab unit record of schema version "
            f"{store.SCHEMA_VERSION}); move it out of {path.parent}"
        )
    return [str(unit) for unit in units]


def done_units(parts: Path) -> set[str]:
    """Unit ids recorded in the finished parts (half-written temporaries start with '.')."""
    return {unit for path in sorted(parts.glob(contents.PART_GLOB)) for unit in part_units(path)}


def write_part(parts: Path, rows: list[dict[str, Any]], unit_ids: Sequence[str]) -> Path:
    """One atomic part holding `rows` and, in its metadata, the ids of the units they finish."""
    digest = hashlib.sha256("\n".join(unit_ids).encode()).hexdigest()[:20]
    frame = pd.DataFrame(rows, columns=store.COLUMNS).assign(run_id="", model="")
    return store.write_table(parts / f"part-{digest}.parquet", frame, {"units": list(unit_ids)})


def unit_rows(
    unit: Unit, measures: dict[str, float], clean: dict[str, float], task: Task
) -> list[dict[str, Any]]:
    head = unit.single_head
    where = {"probe": schema.SWEEP_PROBE, "condition": unit.condition,
             "layer": head[0] if head else None, "head": head[1] if head else None}  # fmt: skip
    rows = []
    for measure, value in measures.items():
        worse = clean[measure] - value if task.higher_is_better[measure] else value - clean[measure]
        rows.append({**where, "metric": schema.sweep_metric(unit.task, measure), "value": value})
        harm = schema.sweep_metric(unit.task, measure, harm=True)
        rows.append({**where, "metric": harm, "value": worse})
    return rows


def clean_rows(name: str, clean: dict[str, float]) -> list[dict[str, Any]]:
    """The rows of task `name`'s clean measures."""
    return [{"probe": schema.SWEEP_PROBE, "metric": schema.sweep_metric(name, measure),
             "condition": schema.CLEAN_CONDITION, "value": value}
            for measure, value in clean.items()]  # fmt: skip


def attribution_rows(task: Task, estimate: torch.Tensor, mode: str) -> list[dict[str, Any]]:
    sign = -1.0 if task.higher_is_better[task.objective] else 1.0
    return [
        {"probe": schema.ATTRIBUTION_PROBE,
         "metric": schema.sweep_metric(task.name, task.objective, harm=True),
         "condition": mode, "layer": layer, "head": head,
         "value": sign * float(estimate[layer, head])}
        for layer in range(estimate.shape[0]) for head in range(estimate.shape[1])
    ]  # fmt: skip


def merge(parts: Path, expected: Sequence[str]) -> pd.DataFrame:
    """All parts as one table, after checking every unit is there exactly once."""
    frames, seen = [], []
    for path in sorted(parts.glob(contents.PART_GLOB)):
        seen.extend(part_units(path))
        frames.append(store.read_table(path))
    missing = sorted(set(expected) - set(seen))
    doubled = sorted({unit for unit in seen if seen.count(unit) > 1})
    if missing or doubled:
        raise store.StoreError(f"sweep parts in {parts} are inconsistent: missing {missing[:5]}, "
                               f"doubled {doubled[:5]}")  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    keys = ["probe", "metric", "condition", "layer", "head"]
    if table.duplicated(keys).any():
        raise store.StoreError(f"sweep parts in {parts} hold duplicated rows")
    return table.sort_values(keys, kind="stable", ignore_index=True)
