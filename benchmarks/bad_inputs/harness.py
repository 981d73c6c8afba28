"""The survey's harness: a case, the environment it runs in, running `headlab` as a subprocess,
and the classification of what came back."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADLAB = ROOT / ".venv" / "bin" / "headlab"
TINY = ["--model", "tiny-random"]
CLASSES = ("clear", "vague", "traceback", "silent", "other", "pass", "fail")
STAGING = re.compile(r"^\..+\.\d+\.tmp-")


@dataclass
class Result:
    rc: int | None
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    problem: str | None = None  # special cases: why the predicate failed
    note: str = ""


@dataclass
class Case:
    name: str
    klass: str
    argv: list[str]
    expect: str = "error"  # error | either (exit 0 or a clear error) | special
    names: tuple[str, ...] = ()  # the message must mention one of these
    pure: bool = True  # must write nothing
    timeout: float = 120
    max_s: float | None = None
    special: Callable[[Env], Result] | None = None
    check: Callable[[Result, Env], str | None] | None = None  # judges an exit 0 of "either"


@dataclass
class Env:
    root: Path
    environ: dict
    data: Path = Path()  # the current case's fresh data directory
    cache: dict = field(default_factory=dict)
    mounts: list = field(default_factory=list)

    def __getattr__(self, name: str) -> Path:
        dirs = {"fx": "fx", "store": "store", "cwd": "cwd", "P": "fx/prompts/", "M": "fx/models/"}
        if name not in dirs:
            raise AttributeError(name)
        return self.root / dirs[name]

    def sub(self, text: str) -> str:
        for key in ("data", "store", "fx", "root", "P", "M"):
            value = str(getattr(self, key)) + ("/" if key in "PM" else "")
            text = text.replace("{" + key + "}", value)
        return text


def headlab(env: Env, argv: list[str], timeout: float = 120) -> Result:
    started = time.monotonic()
    try:
        done = subprocess.run([str(HEADLAB), *argv], cwd=env.cwd, env=env.environ,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s or ""
                    for s in (expired.stdout, expired.stderr))  # fmt: skip
        return Result(None, out, err, timeout)
    return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def popen(env: Env, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([str(HEADLAB), *argv], cwd=env.cwd, env=env.environ,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")  # fmt: skip


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def last_line(text: str) -> str:
    return (lines(text) or [""])[-1]


# --- checks --------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` but lock directories: files by (size, mtime), dirs by presence."""
    found = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".locks"]
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            found[str(path)] = ("d",) if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return found


def written(before: dict, after: dict, env: Env) -> list[str]:
    allowed = {str(env.root / "data"), str(env.data), str(env.data / "runs")}  # .locks' parents
    changed = [p for p, v in after.items() if before.get(p) != v and p not in allowed]
    return sorted(changed + [f"(removed) {p}" for p in before if p not in after])


def traceback_summary(err: str) -> str:
    tail = err[err.rfind("Traceback") :]
    frames = re.findall(r'File "([^"]+)", line (\d+)', tail)
    ours = [(f, n) for f, n in frames if f.startswith(str(ROOT)) and "/.venv/" not in f]
    where = f"{Path(ours[-1][0]).relative_to(ROOT)}:{ours[-1][1]}" if ours else "no headlab frame"
    exc = next((line for line in reversed(tail.splitlines()) if line and line[0] != " "), "?")
    return f"{exc.strip()[:200]} @ {where}"


def error_form(r: Result) -> str | None:
    """Why `r` is not one clear error line with exit 2 (None if it is)."""
    found = lines(r.err)
    if r.rc is None:
        return f"timeout after {r.seconds:.0f} s"
    if r.rc != 2 or not found:
        return f"exit status {r.rc}" + ("" if found else ", empty stderr")
    if not (found[-1].startswith("headlab") and "error" in found[-1]):
        return "last stderr line is not a headlab error"
    if len(found) > 1 and not found[0].startswith("usage:"):
        return f"{len(found)} stderr lines"
    return None


def classify(case: Case, r: Result, changes: list[str], env: Env) -> tuple[str, str]:
    if "Traceback" in r.err:
        return "traceback", traceback_summary(r.err)
    if case.expect == "special":
        return ("fail", r.problem) if r.problem else ("pass", r.note)
    if case.max_s and r.seconds > case.max_s:
        return "other", f"took {r.seconds:.0f} s (limit {case.max_s:.0f} s)"
    if case.expect == "either" and r.rc == 0:
        problem = case.check(r, env) if case.check else None
        return ("fail", problem) if problem else ("pass", "exit 0")
    if r.rc == 0:
        return "silent", "exit 0" + (f"; wrote {changes[:1]}" if changes else "")
    if form := error_form(r):
        return "other", form
    if case.pure and changes:
        return "other", f"wrote {len(changes)} paths, e.g. {changes[0]}"
    if case.names and not any(env.sub(n).lower() in last_line(r.err).lower() for n in case.names):
        return "vague", f"message names none of {list(case.names)}"
    return "clear", ""


def read_table(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


def doubled(table) -> int:
    return int(table.duplicated(subset=[c for c in table if c not in ("value", "run_id")]).sum())


def no_doubled_rows(r: Result, env: Env) -> str | None:
    tables = [read_table(p) for p in (env.data / "runs").glob("*/results.parquet")]
    n = sum(doubled(t) for t in tables)
    return f"exit 0 with {n} of {sum(map(len, tables))} rows doubled" if n else None
