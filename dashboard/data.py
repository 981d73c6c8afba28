"""Reading stored runs for the dashboard: only files under the data directory, schema-checked.

Run ids are validated by the store's rule and every path is resolved and checked to stay inside
`<data>/runs/`, so neither a crafted run name (from the URL) nor a symlink planted in the data
directory makes the dashboard read anything else. Loads are cached (`st.cache_data`) under a key
that includes the files' size and modification time, so a re-written run is read again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from analyses.results import store
from analyses.results.store import StoreError
from dashboard import frames
from dashboard.frames import PATTERN_PROBE, PromptTokens

DEFAULT_DATA = Path("data")


def data_dir_from_args(argv: Sequence[str]) -> Path:
    """The data directory given as `--data DIR` after `streamlit run app.py --`."""
    parser = argparse.ArgumentParser(prog="headlab dashboard", add_help=False)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    known, _ = parser.parse_known_args(list(argv))
    return known.data.expanduser().resolve()


def _runs_root(data_dir: Path) -> Path:
    return store.runs_root(data_dir).resolve()


def run_directory(data_dir: Path, run_id: str) -> Path:
    """`<data>/runs/<run_id>`, resolved; refused if the id is malformed or it leads elsewhere."""
    store.validate_run_id(run_id)
    root = _runs_root(data_dir)
    path = (root / run_id).resolve()
    if path.parent != root:
        raise StoreError(f"run {run_id!r} resolves to {path}, outside {root}; refusing to read it")
    if not path.is_dir():
        raise StoreError(f"no run {run_id!r} under {root}")
    return path


def _inside(path: Path, directory: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(directory):
        raise StoreError(f"{path} resolves to {resolved}, outside {directory}; refusing to read it")
    return resolved


def run_ids(data_dir: Path) -> list[str]:
    """Finished runs whose directory really lies under `<data>/runs/`, oldest first."""
    ids = []
    for run_id in store.run_ids(data_dir):
        try:
            run_directory(data_dir, run_id)
        except StoreError:
            continue
        ids.append(run_id)
    return ids


def read_manifest(data_dir: Path, run_id: str) -> dict[str, Any]:
    directory = run_directory(data_dir, run_id)
    path = _inside(directory / store.MANIFEST_FILE, directory)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise StoreError(f"run {run_id!r} has no manifest at {path}") from error
    except json.JSONDecodeError as error:
        raise StoreError(f"manifest {path} is not valid JSON: {error}") from error


def result_files(data_dir: Path, run_id: str) -> list[Path]:
    directory = run_directory(data_dir, run_id)
    files = [_inside(path, directory) for path in sorted(directory.glob("*.parquet"))]
    if not files:
        raise StoreError(f"run {directory} holds no results tables")
    return files


def read_table(path: Path, filters: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """One results file, schema-checked like `store.read_table`, reading only rows that match."""
    try:
        schema = pq.read_schema(path)
        metadata = schema.metadata or {}
        if store.SCHEMA_KEY not in metadata:
            raise StoreError(f"{path} is a parquet file but not a headlab results table")
        version = int(metadata[store.SCHEMA_KEY])
        if version != store.SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}; this dashboard reads {store.SCHEMA_VERSION}"
            )
        missing = [name for name in store.COLUMNS if name not in schema.names]
        if missing:
            raise StoreError(f"{path} lacks the columns {missing}")
        arrow = pq.read_table(path, filters=filters or None)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as error:
        if isinstance(error, StoreError):
            raise
        raise StoreError(f"{path} is not a readable results table: {error}") from error
    return store.conform(arrow.to_pandas())


def _read_run(data_dir: Path, run_id: str, filters: list[tuple[str, str, Any]]) -> pd.DataFrame:
    frames = [read_table(path, filters) for path in result_files(data_dir, run_id)]
    return pd.concat(frames, ignore_index=True)


def load_results(data_dir: Path, run_id: str) -> pd.DataFrame:
    """Every row of a run except the stored attention patterns (those are read per head)."""
    return _read_run(data_dir, run_id, [("probe", "!=", PATTERN_PROBE)])


def load_pattern_prompts(data_dir: Path, run_id: str) -> dict[str, PromptTokens]:
    """The prompts whose pooled attention patterns the run stores, by prompt id."""
    filters = [("probe", "==", PATTERN_PROBE), ("metric", "==", "tokens")]
    return frames.pattern_prompts(_read_run(data_dir, run_id, filters))


def load_head_pattern(
    data_dir: Path, run_id: str, layer: int, head: int, prompt: str
) -> pd.DataFrame:
    """One head's pooled pattern on one stored prompt: query_block, key_block, value."""
    filters = [
        ("probe", "==", PATTERN_PROBE),
        ("metric", "==", "attention"),
        ("layer", "==", layer),
        ("head", "==", head),
    ]
    return frames.pattern_cells(_read_run(data_dir, run_id, filters), layer, head, prompt)


def load_side_table(data_dir: Path, run_id: str, name: str) -> pd.DataFrame | None:
    """A run's side table `tables/<name>.parquet` (any shape, e.g. per-sample outcomes), or
    None when the run has none by that name."""
    directory = run_directory(data_dir, run_id)
    path = store.side_table_path(directory, name)
    if not path.exists():
        return None
    path = _inside(path, directory)
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise StoreError(f"{path} is not a readable parquet file: {error}") from error
    if store.TABLE_KEY not in (arrow.schema.metadata or {}):
        raise StoreError(f"{path} is a parquet file but not a headlab side table")
    return arrow.to_pandas()


def list_runs(data_dir: Path) -> pd.DataFrame:
    """One row per run with what the overview shows: model, probes, prompts, provenance."""
    rows = []
    for run_id in run_ids(data_dir):
        try:
            manifest = read_manifest(data_dir, run_id)
        except StoreError:
            continue
        model = manifest.get("model") or {}
        prompts = manifest.get("prompts") or {}
        git = manifest.get("git") or {}
        rows.append(
            {
                "run_id": run_id,
                "kind": manifest.get("kind"),
                "model": model.get("model") if isinstance(model, dict) else str(model),
                "probes": ", ".join(manifest.get("probes") or {}),
                "prompts": prompts.get("name"),
                "n_prompts": prompts.get("n_prompts"),
                "max_tokens": prompts.get("max_tokens"),
                "rows": manifest.get("n_rows"),
                "created": manifest.get("created"),
                "git": (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else ""),
            }
        )
    columns = [
        "run_id",
        "kind",
        "model",
        "probes",
        "prompts",
        "n_prompts",
        "max_tokens",
        "rows",
        "created",
        "git",
    ]
    return pd.DataFrame(rows, columns=columns)


# ---- cached loads (keys carry the files' size and mtime, so a re-written run is re-read) ----


def _signature(data_dir: Path, run_id: str) -> tuple[tuple[str, int, int], ...]:
    directory = run_directory(data_dir, run_id)
    files = [*result_files(data_dir, run_id), directory / store.MANIFEST_FILE]
    files += sorted((directory / store.TABLES_DIR).glob("*.parquet"))
    stats = [(str(path.relative_to(directory)), path.stat()) for path in files if path.exists()]
    return tuple((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_results(data_dir: str, run_id: str, signature: tuple) -> pd.DataFrame:
    return load_results(Path(data_dir), run_id)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_manifest(data_dir: str, run_id: str, signature: tuple) -> dict[str, Any]:
    return read_manifest(Path(data_dir), run_id)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_prompts(data_dir: str, run_id: str, signature: tuple) -> dict[str, PromptTokens]:
    return load_pattern_prompts(Path(data_dir), run_id)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_head_pattern(
    data_dir: str, run_id: str, layer: int, head: int, prompt: str, signature: tuple
) -> pd.DataFrame:
    return load_head_pattern(Path(data_dir), run_id, layer, head, prompt)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_side_table(
    data_dir: str, run_id: str, name: str, signature: tuple
) -> pd.DataFrame | None:
    return load_side_table(Path(data_dir), run_id, name)


@st.cache_data(show_spinner=False, ttl=5)
def _cached_run_list(data_dir: str) -> pd.DataFrame:
    return list_runs(Path(data_dir))


def results(data_dir: Path, run_id: str) -> pd.DataFrame:
    return _cached_results(str(data_dir), run_id, _signature(data_dir, run_id))


def manifest(data_dir: Path, run_id: str) -> dict[str, Any]:
    return _cached_manifest(str(data_dir), run_id, _signature(data_dir, run_id))


def pattern_prompts(data_dir: Path, run_id: str) -> dict[str, PromptTokens]:
    return _cached_prompts(str(data_dir), run_id, _signature(data_dir, run_id))


def head_pattern(data_dir: Path, run_id: str, layer: int, head: int, prompt: str) -> pd.DataFrame:
    signature = _signature(data_dir, run_id)
    return _cached_head_pattern(str(data_dir), run_id, layer, head, prompt, signature)


def runs(data_dir: Path) -> pd.DataFrame:
    return _cached_run_list(str(data_dir))


def side_table(data_dir: Path, run_id: str, name: str) -> pd.DataFrame | None:
    return _cached_side_table(str(data_dir), run_id, name, _signature(data_dir, run_id))
