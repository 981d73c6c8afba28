"""The results store: one tidy long table per run, as parquet, plus a manifest.

    data/runs/<run_id>/results.parquet   the results schema's columns (probes/core/schema.py)
    data/runs/<run_id>/manifest.json     provenance: model, prompts, probe parameters, versions
    data/runs/<run_id>/tables/<name>.parquet  side tables of any shape (e.g. per-sample outcomes),
                                         kept in a subdirectory so "*.parquet" globs of the run
                                         still find only results tables

Every write goes to a temporary file or directory first and is renamed into place, so a crash
never leaves a half-written run. Reads check the schema and name the file that is wrong, and
read only inside `<data>/runs/`: a run directory or file that resolves elsewhere (a symlink) is
refused, by the CLI and the dashboard alike, since both read through here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analyses.results import contents, locks
from probes.core import schema
from probes.core.errors import HeadlabError

SCHEMA_VERSION = schema.SCHEMA_VERSION
SCHEMA_KEY = b"headlab.schema"
MANIFEST_KEY = b"headlab.manifest"
RESULTS_FILE = "results.parquet"
MANIFEST_FILE = "manifest.json"
TABLES_DIR = "tables"
TABLE_KEY = b"headlab.table"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
_PANDAS_TYPE_OF = {"str": "string", "int": "Int64", "float": "float64"}
SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in schema.COLUMN_TYPES.items()])
COLUMNS = list(schema.COLUMNS)
_PANDAS_TYPES = {name: _PANDAS_TYPE_OF[kind] for name, kind in schema.COLUMN_TYPES.items()}


class StoreError(HeadlabError, RuntimeError):
    """A results file or run directory is missing, corrupt or not headlab's; names the path."""


def validate_run_id(run_id: str) -> str:
    """Run ids are plain names, so no crafted id can point outside the runs directory."""
    if not RUN_ID.match(run_id) or run_id in {".", ".."}:
        raise StoreError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    return run_id


def conform(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with exactly the schema's columns and types (missing optional columns are null)."""
    missing = schema.REQUIRED - set(table.columns)
    if missing:
        raise StoreError(f"results table lacks required columns {sorted(missing)}")
    table = table.copy()
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    return table[COLUMNS].astype(_PANDAS_TYPES)


def write_atomically(path: Path, write: Any) -> None:
    """`write(temporary)`, then rename into place: `path` is whole or absent, never half. A
    full disk or a refused write is a StoreError naming the file (the temporary is removed)."""
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=locks.temporary_prefix(path.name), dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        locks.usual_mode(temporary)
        write(str(temporary))
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise StoreError(
            f"cannot write {path}: {error.strerror or error}; it was not written"
        ) from None
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Path:
    """Write a per-head results table to `path` atomically, schema and provenance in metadata."""
    arrow = pa.Table.from_pandas(conform(table), schema=SCHEMA, preserve_index=False)
    metadata = {SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    if manifest is not None:
        metadata[MANIFEST_KEY] = json.dumps(manifest, default=str).encode()
    arrow = arrow.replace_schema_metadata(metadata)
    write_atomically(path, lambda temporary: pq.write_table(arrow, temporary))
    return path


def side_table_path(directory: Path, name: str) -> Path:
    """Where side table `name` of the run in `directory` lives."""
    if not RUN_ID.match(name):
        raise StoreError(f"invalid table name {name!r}: use letters, digits, '.', '_' and '-'")
    return directory / TABLES_DIR / f"{name}.parquet"


def write_side_table(
    path: Path, table: pd.DataFrame, manifest: dict[str, Any] | None = None
) -> Path:
    """Write a free-form side table to `path` atomically, marked as headlab's, provenance kept."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    metadata = {TABLE_KEY: path.stem.encode()}
    if manifest is not None:
        metadata[MANIFEST_KEY] = json.dumps(manifest, default=str).encode()
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **metadata})
    write_atomically(path, lambda temporary: pq.write_table(arrow, temporary))
    return path


def read_side_table(
    data_dir: Path | str, run_id: str, name: str, filters: list | None = None
) -> pd.DataFrame:
    """Side table `name` of a run (only rows matching `filters`, pyarrow's form: a list of
    (column, op, value), or a list of such lists meaning any of them); names the file when it
    is missing or not headlab's."""
    directory = existing_run_dir(data_dir, run_id)
    path = side_table_path(directory, name)
    if not path.is_file():
        raise StoreError(f"run {run_id!r} has no table {name!r} (looked for {path})")
    path = inside(path, directory)
    try:
        arrow = pq.read_table(path, filters=filters or None)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise StoreError(f"{path} is not a readable parquet file: {error}") from error
    if TABLE_KEY not in (arrow.schema.metadata or {}):
        raise StoreError(f"{path} is a parquet file but not a headlab side table")
    return arrow.to_pandas()


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    text = json.dumps(payload, indent=2, default=str)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))
    return path


def read_table(path: Path | str, filters: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """Read one results parquet file, checking that it is intact and follows headlab's schema;
    `filters` (pyarrow's) read only the rows that match."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"results file {path} does not exist")
    try:
        found = pq.read_schema(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise StoreError(
            f"{path} is not a readable parquet file (corrupt or truncated): {error}"
        ) from error
    metadata = found.metadata or {}
    if SCHEMA_KEY not in metadata:
        raise StoreError(f"{path} is a parquet file but not a headlab results table")
    version = int(metadata[SCHEMA_KEY])
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has results schema version {version}; this headlab reads version "
            f"{SCHEMA_VERSION} (per-token and NIAH rows got columns of their own): re-run it"
        )
    missing = [name for name in COLUMNS if name not in found.names]
    if missing:
        raise StoreError(f"{path} lacks the columns {missing}")
    try:
        arrow = pq.read_table(path, filters=filters or None)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise StoreError(f"{path} is not a readable results table: {error}") from error
    return conform(arrow.to_pandas())


def runs_root(data_dir: Path | str) -> Path:
    """`<data>/runs`; a data directory (or runs directory) that is a file is an error."""
    root = Path(data_dir) / "runs"
    for path in (Path(data_dir), root):
        if path.exists() and not path.is_dir():
            raise StoreError(f"data directory {data_dir}: {path} is a file, not a directory")
    return root


def run_dir(data_dir: Path | str, run_id: str) -> Path:
    """Where run `run_id` lives (or will be written)."""
    return runs_root(data_dir) / validate_run_id(run_id)


def existing_run_dir(data_dir: Path | str, run_id: str) -> Path:
    """The directory of a stored run, resolved; refused if it resolves outside the runs
    directory (a symlink planted there) or does not exist."""
    root = runs_root(data_dir).resolve()
    path = run_dir(data_dir, run_id).resolve()
    if path.parent != root:
        raise StoreError(f"run {run_id!r} resolves to {path}, outside {root}; refusing to read it")
    if not path.is_dir():
        newest = sorted(run_ids(data_dir), key=lambda known: _created(data_dir, known))[-5:]
        hint = ", ".join(reversed(newest)) or "none; run `headlab scan` first"
        raise StoreError(f"no run {run_id!r} under {root} (newest: {hint})")
    return path


def inside(path: Path, directory: Path) -> Path:
    """`path` resolved, refused if it leads out of `directory` (a symlinked file)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(directory):
        raise StoreError(f"{path} resolves to {resolved}, outside {directory}; refusing to read it")
    return resolved


def result_files(data_dir: Path | str, run_id: str) -> list[Path]:
    """The results tables of a stored run (results.parquet and any sweep-*.parquet)."""
    directory = existing_run_dir(data_dir, run_id)
    files = [inside(path, directory) for path in sorted(directory.glob("*.parquet"))]
    if not files:
        raise StoreError(f"run {directory} holds no results tables")
    return files


def write_run(
    data_dir: Path | str,
    run_id: str,
    table: pd.DataFrame,
    manifest: dict[str, Any],
    side_tables: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Create `runs/<run_id>/` with results, manifest and any side tables, all or nothing
    (staged, then renamed)."""
    final = run_dir(data_dir, run_id)
    if final.exists():
        raise StoreError(f"run {final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    locks.remove_leftovers(final.parent)  # staging directories of writers killed mid-write
    try:
        staging = Path(tempfile.mkdtemp(prefix=locks.temporary_prefix(run_id), dir=final.parent))
        locks.usual_mode(staging)
    except OSError as error:
        raise StoreError(f"cannot write run {final}: {error.strerror or error}") from None
    try:
        table = table.assign(run_id=run_id)
        write_table(staging / RESULTS_FILE, table, manifest)
        write_json(staging / MANIFEST_FILE, {"run_id": run_id, **manifest})
        for name, side in (side_tables or {}).items():
            write_side_table(side_table_path(staging, name), side, manifest)
        staging.rename(final)
    except StoreError as error:  # e.g. a full disk: name the run's path, not the staging one
        shutil.rmtree(staging, ignore_errors=True)
        message = str(error).replace(str(staging), str(final)).removesuffix("; it was not written")
        raise StoreError(f"{message}; run {run_id!r} was not created") from None
    except OSError as error:  # e.g. another writer's run appeared at `final` meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"cannot write run {final}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_manifest(data_dir: Path | str, run_id: str) -> dict[str, Any]:
    directory = existing_run_dir(data_dir, run_id)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise StoreError(f"run {run_id!r} has no manifest at {path}")
    path = inside(path, directory)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StoreError(f"manifest {path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise StoreError(f"manifest {path} is not a JSON object")
    return manifest


def update_manifest(
    data_dir: Path | str, run_id: str, update: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Read a run's manifest, apply `update` to it, and write the result back atomically."""
    manifest = update(read_manifest(data_dir, run_id))
    write_json(run_dir(data_dir, run_id) / MANIFEST_FILE, manifest)
    return manifest


def run_ids(data_dir: Path | str) -> list[str]:
    """Every run directory, by name: staging directories (a leading '.') and runs that resolve
    outside the runs directory (symlinks) are skipped. A directory without a manifest is listed
    (as unreadable by `list_runs`) and refused by every reader."""
    root = runs_root(data_dir)
    if not root.is_dir():
        return []
    resolved_root = root.resolve()
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and RUN_ID.match(entry.name) and entry.resolve().parent == resolved_root
    )


def load_run(
    data_dir: Path | str, run_id: str, filters: list[tuple[str, str, Any]] | None = None
) -> pd.DataFrame:
    """All results tables of one run, as one DataFrame (only rows matching `filters`)."""
    read_manifest(data_dir, run_id)  # a directory without a manifest is no finished run
    tables = [read_table(path, filters) for path in result_files(data_dir, run_id)]
    return pd.concat(tables, ignore_index=True)


def load_runs(data_dir: Path | str, ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Several runs (all by default) stacked into one DataFrame."""
    ids = list(ids) if ids is not None else run_ids(data_dir)
    if not ids:
        return conform(pd.DataFrame(columns=COLUMNS))
    return pd.concat([load_run(data_dir, run_id) for run_id in ids], ignore_index=True)


def run_status(data_dir: Path | str, run_id: str) -> str:
    """ "ok", or why the run cannot be read (no manifest, bad JSON, a results file that is
    truncated, corrupt or foreign): checked from the files' headers, without reading rows."""
    try:
        read_manifest(data_dir, run_id)
        for path in result_files(data_dir, run_id):
            check_header(path)
    except StoreError as error:
        return f"unreadable: {error}"
    return "ok"


def check_header(path: Path) -> None:
    """The parquet footer of a results file names headlab's schema at this version."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise StoreError(f"{path.name} is not a readable parquet file: {error}") from error
    if SCHEMA_KEY not in metadata:
        raise StoreError(f"{path.name} is not a headlab results table")
    if int(metadata[SCHEMA_KEY]) != SCHEMA_VERSION:
        raise StoreError(f"{path.name} has results schema version {int(metadata[SCHEMA_KEY])}")


def list_runs(data_dir: Path | str) -> pd.DataFrame:
    """One row per run, oldest first by creation time: id, status ("ok" or why it cannot be
    read), model, probes, prompts, when, and how many result rows. One bad run never stops the
    listing."""
    rows = []
    for run_id in run_ids(data_dir):
        status = run_status(data_dir, run_id)
        try:
            manifest = read_manifest(data_dir, run_id)
        except StoreError:
            manifest = {}
        model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
        prompts = manifest.get("prompts") if isinstance(manifest.get("prompts"), dict) else {}
        rows.append(
            {
                "run_id": run_id,
                "status": status,
                "kind": manifest.get("kind"),
                "model": (model or {}).get("model"),
                "probes": ",".join(manifest.get("probes") or {}),
                "prompts": (prompts or {}).get("name"),
                "created": _created(data_dir, run_id, manifest),
                "rows": contents.run_rows(run_dir(data_dir, run_id)) if status == "ok" else None,
            }
        )
    columns = ["run_id", "status", "kind", "model", "probes", "prompts", "created", "rows"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["created", "run_id"], kind="stable", ignore_index=True)


def _created(data_dir: Path | str, run_id: str, manifest: dict[str, Any] | None = None) -> str:
    """When a run was made: its manifest says; a run without a readable one, its directory."""
    if manifest is None:
        try:
            manifest = read_manifest(data_dir, run_id)
        except StoreError:
            manifest = {}
    created = manifest.get("created")
    if isinstance(created, str):
        return created
    stamp = run_dir(data_dir, run_id).stat().st_mtime
    return pd.Timestamp(stamp, unit="s", tz="UTC").isoformat(timespec="seconds")


def latest_run(data_dir: Path | str, where: Callable[[dict[str, Any]], bool] | None = None) -> str:
    """The newest readable run by creation time (and, given `where`, whose manifest passes it)."""
    runs = list_runs(data_dir)
    for run_id in reversed(list(runs.loc[runs["status"] == "ok", "run_id"])):
        if where is None or where(read_manifest(data_dir, run_id)):
            return str(run_id)
    raise StoreError(f"no readable run under {runs_root(data_dir)}; run `headlab scan` first")
