"""Reading stored runs for the dashboard: only files under the data directory, schema-checked.

Run ids are validated by the store's rule and every path is resolved and checked to stay inside
`<data>/runs/`, so neither a crafted run name (from the URL) nor a symlink planted in the data
directory makes the dashboard read anything else. Loads are cached (`st.cache_data`) under a key
that includes the files' size and modification time, so a re-written run is read again.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analyses.results import contents, store
from analyses.results.store import StoreError
from dashboard import frames
from dashboard.frames import PATTERN_PROBE, HeadTopKeys, PromptTokens, TopKeysPrompt
from probes.core import schema

DEFAULT_DATA = Path("data")


def data_dir_from_args(argv: Sequence[str]) -> Path:
    """The data directory given as `--data DIR` after `streamlit run app.py --`."""
    parser = argparse.ArgumentParser(prog="headlab dashboard", add_help=False)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    known, _ = parser.parse_known_args(list(argv))
    return known.data.expanduser().resolve()


def run_directory(data_dir: Path, run_id: str) -> Path:
    """`<data>/runs/<run_id>`, resolved; refused if the id is malformed or it leads elsewhere."""
    return store.existing_run_dir(data_dir, run_id)


def run_ids(data_dir: Path) -> list[str]:
    """Finished runs whose directory really lies under `<data>/runs/`, oldest first."""
    return store.run_ids(data_dir)


def read_manifest(data_dir: Path, run_id: str) -> dict[str, Any]:
    return store.read_manifest(data_dir, run_id)


def _read_run(data_dir: Path, run_id: str, filters: list[tuple[str, str, Any]]) -> pd.DataFrame:
    return store.load_run(data_dir, run_id, filters)


def load_results(data_dir: Path, run_id: str) -> pd.DataFrame:
    """Every row of a run except the stored attention patterns (those are read per head),
    with the finished chunks of a sweep still running in it."""
    table = _read_run(data_dir, run_id, [("probe", "!=", PATTERN_PROBE)])
    running = running_parts(data_dir, run_id)
    if not running:
        return table
    model = (read_manifest(data_dir, run_id).get("model") or {}).get("model")
    chunks = [store.read_table(store.inside(path, run_directory(data_dir, run_id)))
              for path in running]  # fmt: skip
    chunks = [chunk.assign(run_id=run_id, model=model) for chunk in chunks]
    return store.conform(pd.concat([table, *chunks], ignore_index=True))


def running_parts(data_dir: Path, run_id: str) -> list[Path]:
    """Finished chunk files of the sweeps still running in this run."""
    sweeps = contents.running_sweeps(run_directory(data_dir, run_id))
    return [path for paths in sweeps.values() for path in paths]


def load_pattern_prompts(data_dir: Path, run_id: str) -> dict[str, PromptTokens]:
    """The prompts whose pooled attention patterns the run stores, by prompt id."""
    table = load_side_table(data_dir, run_id, schema.PATTERN_PROMPTS_TABLE)
    return {} if table is None else frames.pattern_prompts(table)


def load_head_pattern(
    data_dir: Path, run_id: str, layer: int, head: int, prompt: str
) -> pd.DataFrame:
    """One head's pooled pattern on one stored prompt: query_block, key_block, value."""
    filters = [
        ("probe", "==", PATTERN_PROBE),
        ("metric", "==", frames.PATTERN_METRIC),
        ("layer", "==", layer),
        ("head", "==", head),
    ]
    return frames.pattern_cells(_read_run(data_dir, run_id, filters), layer, head, prompt)


def load_top_keys_prompts(data_dir: Path, run_id: str) -> dict[str, TopKeysPrompt]:
    """The prompts whose top keys per query the run stores (the token view's), by prompt id."""
    table = load_side_table(data_dir, run_id, schema.TOP_KEYS_PROMPTS_TABLE)
    return {} if table is None else frames.top_keys_prompts(table)


def load_head_top_keys(
    data_dir: Path, run_id: str, prompt: TopKeysPrompt, heads: Sequence[tuple[int, int]]
) -> list[HeadTopKeys]:
    """The stored top keys of `heads` on `prompt` (only their rows are read), in that order."""
    if (
        not heads
        or not store.side_table_path(
            run_directory(data_dir, run_id), schema.TOP_KEYS_TABLE
        ).exists()
    ):
        return []
    filters = frames.head_filters(prompt.prompt, heads)
    table = store.read_side_table(data_dir, run_id, schema.TOP_KEYS_TABLE, filters)
    return frames.head_top_keys(table, prompt, heads)


def load_side_table(data_dir: Path, run_id: str, name: str) -> pd.DataFrame | None:
    """A run's side table `tables/<name>.parquet` (any shape, e.g. per-sample outcomes), or
    None when the run has none by that name."""
    if not store.side_table_path(run_directory(data_dir, run_id), name).exists():
        return None
    return store.read_side_table(data_dir, run_id, name)


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
        directory = run_directory(data_dir, run_id)
        files = contents.results_and_running_parts(directory)
        running = contents.running_sweeps(directory)
        rows.append(
            {
                "run_id": run_id,
                "kind": manifest.get("kind"),
                "model": model.get("model") if isinstance(model, dict) else str(model),
                "probes": ", ".join(manifest.get("probes") or {}),
                "prompts": prompts.get("name"),
                "n_prompts": prompts.get("n_prompts"),
                "max_tokens": prompts.get("max_tokens"),
                "rows": contents.row_count(files),
                "head_rows": contents.head_row_count(files),
                "running": ", ".join(
                    f"sweep {name}: {len(parts)} chunks done" for name, parts in running.items()
                ),
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
        "head_rows",
        "running",
        "created",
        "git",
    ]
    return pd.DataFrame(rows, columns=columns)


# ---- cached loads (keys carry the files' size and mtime, so a re-written run is re-read) ----


def _signature(data_dir: Path, run_id: str) -> tuple[tuple[str, int, int], ...]:
    directory = run_directory(data_dir, run_id)
    files = [*store.result_files(data_dir, run_id), directory / store.MANIFEST_FILE]
    files += running_parts(data_dir, run_id)
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
def _cached_top_keys_prompts(
    data_dir: str, run_id: str, signature: tuple
) -> dict[str, TopKeysPrompt]:
    return load_top_keys_prompts(Path(data_dir), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_head_top_keys(
    data_dir: str, run_id: str, prompt: TopKeysPrompt, heads: tuple, signature: tuple
) -> list[HeadTopKeys]:
    return load_head_top_keys(Path(data_dir), run_id, prompt, list(heads))


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


def top_keys_prompts(data_dir: Path, run_id: str) -> dict[str, TopKeysPrompt]:
    return _cached_top_keys_prompts(str(data_dir), run_id, _signature(data_dir, run_id))


def head_top_keys(
    data_dir: Path, run_id: str, prompt: TopKeysPrompt, heads: Sequence[tuple[int, int]]
) -> list[HeadTopKeys]:
    signature = _signature(data_dir, run_id)
    return _cached_head_top_keys(str(data_dir), run_id, prompt, tuple(heads), signature)


def runs(data_dir: Path) -> pd.DataFrame:
    return _cached_run_list(str(data_dir))


def side_table(data_dir: Path, run_id: str, name: str) -> pd.DataFrame | None:
    return _cached_side_table(str(data_dir), run_id, name, _signature(data_dir, run_id))
