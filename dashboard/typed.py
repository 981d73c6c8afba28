"""A typed prompt's top keys, computed in a subprocess so the dashboard never imports torch.

The subprocess is `python -m analyses.cli scan --probes top_keys` on a one-line JSONL file in a
temporary data directory, with the selected run's model and dtype: the same checks, the same
probe and the same one-line errors as `headlab scan`. The dashboard reads the two side tables
back and removes the directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.results import store
from dashboard.frames import TOP_KEYS_PROBE
from probes.core import schema

RUN_ID = "typed"
PROMPT_ID = "typed"
MAX_CHARS = 20_000  # about 4–5k tokens of prose; a prompt past the model's context is refused
TIMEOUT_S = 600.0
_PROGRESS = re.compile(r"(\d+)/(\d+)\s*\[")  # tqdm's "16/32 [00:01<...]"


class TypedPromptError(RuntimeError):
    """The subprocess failed; the message is one line (the scan's own error when it gave one)."""


@dataclass(frozen=True)
class TypedResult:
    """The side tables the subprocess wrote: the prompt's tokens and every head's top keys."""

    prompts: pd.DataFrame
    top_keys: pd.DataFrame
    seconds: float


def command(
    model: str, dtype: str, prompts_file: Path, data_dir: Path, k: int, device: str = "cpu"
) -> list[str]:
    """The scan that stores the top keys of the one prompt in `prompts_file`."""
    return [
        sys.executable, "-m", "analyses.cli", "scan",
        "--model", model, "--dtype", dtype, "--device", device,
        "--probes", TOP_KEYS_PROBE, "--param", f"{TOP_KEYS_PROBE}.k={k}",
        "--prompts", str(prompts_file), "--data", str(data_dir), "--run-id", RUN_ID,
        "--max-tokens", "none", "--batch-size", "1",
    ]  # fmt: skip


def error_line(stderr: str, returncode: int) -> str:
    """One line saying why the subprocess failed: the scan's `headlab: error: ...` line, else
    the last line of a traceback, else the exit status."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("headlab: error:"):
            return line.removeprefix("headlab: error:").strip()
    if lines:
        return f"{lines[-1][:300]} (exit status {returncode})"
    return f"the scan exited with status {returncode} and said nothing"


def progress_of(stderr: str) -> float | None:
    """The fraction of tokens scanned, from the last tqdm update in `stderr` (None before)."""
    found = _PROGRESS.findall(stderr[-400:])
    if not found:
        return None
    done, total = (int(n) for n in found[-1])
    return done / total if total else None


def compute(
    text: str,
    model: str,
    dtype: str = "float32",
    k: int = 8,
    *,
    device: str = "cpu",
    on_progress: Callable[[str, float | None], None] | None = None,
    timeout: float = TIMEOUT_S,
) -> TypedResult:
    """Top keys of every head on `text`, computed by a `headlab scan` subprocess; raises
    TypedPromptError with one line on failure. `on_progress(phase, fraction)` is called while
    it runs."""
    if not text.strip():
        raise TypedPromptError("type a prompt first")
    if len(text) > MAX_CHARS:
        raise TypedPromptError(
            f"the prompt has {len(text):,} characters; the limit is {MAX_CHARS:,}"
        )
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="headlab-typed-"))
    try:
        prompts_file = directory / "prompt.jsonl"
        prompts_file.write_text(json.dumps({"id": PROMPT_ID, "text": text}) + "\n", "utf-8")
        log = directory / "stderr.log"
        with log.open("w", encoding="utf-8") as stderr:
            process = subprocess.Popen(
                command(model, dtype, prompts_file, directory / "data", k, device),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
            try:
                while process.poll() is None:
                    if time.monotonic() - started > timeout:
                        raise TypedPromptError(f"the scan took longer than {timeout:.0f} s")
                    if on_progress is not None:
                        fraction = progress_of(log.read_text("utf-8", errors="replace"))
                        phase = f"loading {model}" if fraction is None else "scanning"
                        on_progress(phase, fraction)
                    time.sleep(0.25)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if process.returncode != 0:
            message = error_line(log.read_text("utf-8", errors="replace"), process.returncode)
            raise TypedPromptError(message)
        data = directory / "data"
        return TypedResult(
            store.read_side_table(data, RUN_ID, schema.TOP_KEYS_PROMPTS_TABLE),
            store.read_side_table(data, RUN_ID, schema.TOP_KEYS_TABLE),
            time.monotonic() - started,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
