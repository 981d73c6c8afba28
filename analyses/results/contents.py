"""What a run directory holds, read from parquet footers without reading any rows: how many rows,
how many of them are per-head, and the finished chunks of a sweep still running in it.

A sweep writes each finished chunk as `sweep-<name>.parts/part-*.parquet` and merges them into
`sweep-<name>.parquet` at the end (analyses/sweeps/parts.py), so while it runs the chunks are
the only record of its results. Torch-free: the dashboard and `headlab runs` read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SWEEP_PARTS_SUFFIX = ".parts"
PART_GLOB = "part-*.parquet"


def sweep_name(parts_dir: Path) -> str:
    """`sweep-ioi.parts` → `ioi`."""
    return parts_dir.name.removeprefix("sweep-").removesuffix(SWEEP_PARTS_SUFFIX)


def running_sweeps(run_directory: Path) -> dict[str, list[Path]]:
    """Sweep name → its finished chunk files, for each sweep in the run not yet merged (a merged
    sweep's parts are left only in the instant before they are removed: not counted twice)."""
    running = {}
    for parts_dir in sorted(run_directory.glob(f"sweep-*{SWEEP_PARTS_SUFFIX}")):
        merged = run_directory / f"sweep-{sweep_name(parts_dir)}.parquet"
        if parts_dir.is_dir() and not merged.exists():
            running[sweep_name(parts_dir)] = sorted(parts_dir.glob(PART_GLOB))
    return running


def _metadata(path: Path) -> pq.FileMetaData | None:
    try:
        return pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        return None  # an unreadable file is reported by the store's own checks


def row_count(files: Iterable[Path]) -> int:
    """Rows in these parquet files, from their footers."""
    return sum(meta.num_rows for meta in map(_metadata, files) if meta is not None)


def results_and_running_parts(run_directory: Path) -> list[Path]:
    """The run's results tables (`*.parquet` in it) and its running sweeps' finished chunks."""
    running = [path for paths in running_sweeps(run_directory).values() for path in paths]
    return [*sorted(run_directory.glob("*.parquet")), *running]


def run_rows(run_directory: Path) -> int:
    """Rows of a run, counting a running sweep's finished chunks."""
    return row_count(results_and_running_parts(run_directory))


def head_row_count(files: Iterable[Path]) -> int:
    """Rows with a head (per-head results), from the `head` column's null counts; a file whose
    statistics are missing counts all its rows."""
    total = 0
    for meta in map(_metadata, files):
        if meta is None:
            continue
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if "head" not in names:
            continue
        column = names.index("head")
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            stats = chunk.column(column).statistics
            nulls = stats.null_count if stats is not None and stats.has_null_count else 0
            total += chunk.num_rows - nulls
    return total
