"""A sharded scan's parts on disk: where they live, the settings they were computed with, and
finding an unfinished scan to resume (analyses.jobs.scan_runs writes and merges them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.jobs.scan import ScanConfig
from analyses.results import manifest as manifests
from analyses.results import store

if TYPE_CHECKING:
    from probes.inputs.prompts import PromptSuite

PARTS_ROOT = ".scan-parts"  # under runs/: hidden, so no listing takes it for a run
SETTINGS_FILE = "settings.json"
# Fields that do not change a scan's numbers, which a rerun may change (threads change float
# sums in the last bits, as for sweeps: README); every other field must match the parts'.
FREE = ("run_id", "data_dir", "progress", "prompts", "threads", "executor", "address", "workers",
        "cpus_per_worker", "gpus_per_worker")  # fmt: skip


def settings(config: ScanConfig, suite: PromptSuite) -> dict[str, Any]:
    """What the parts of one model's scan must be computed with (the prompts by content)."""
    record = manifests.config_record(config)
    fixed = {name: value for name, value in record.items() if name not in FREE}
    return {**fixed, "prompts_sha256": suite.sha256}


def parts_root(data_dir: Path) -> Path:
    return store.runs_root(data_dir) / PARTS_ROOT


def read_settings(parts: Path) -> dict[str, Any] | None:
    """The settings of the finished parts in `parts` (None: none finished)."""
    marker = parts / SETTINGS_FILE
    if not marker.is_file() or not any(parts.glob("part-*.pt")):
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as error:
        raise store.StoreError(f"{marker} is not readable JSON ({error}); move it away") from None
    return record if isinstance(record, dict) else {}


def unfinished(config: ScanConfig, suite: PromptSuite) -> str | None:
    """The run id of the newest unfinished scan of these settings (a rerun without --run-id)."""
    root = parts_root(config.data_dir)
    wanted = settings(config, suite)
    found = [
        parts for parts in (root.iterdir() if root.is_dir() else [])
        if store.RUN_ID.match(parts.name) and read_settings(parts) == wanted
    ]  # fmt: skip
    return max(found, key=lambda parts: parts.stat().st_mtime).name if found else None


def tidy(root: Path) -> None:
    """Remove the parts directory once no scan has parts in it."""
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
