"""The survey's special cases: signals, concurrency, a full disk, the listing and 'latest'."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bad_inputs.harness import (
    STAGING,
    TINY,
    Env,
    Result,
    doubled,
    error_form,
    headlab,
    last_line,
    popen,
    read_table,
    snapshot,
    written,
)

# --- special cases: signals, concurrency, full disk, latest ---------------------------------


def sweep_table(data: Path):
    paths = sorted((data / "runs").glob("*/sweep-conc.parquet"))
    return read_table(paths[0]) if paths else None


def leftovers(data: Path) -> list[str]:
    return [str(p) for p in (data / "runs").rglob("*") if STAGING.match(p.name)]


def parts_written(runs: Path) -> int:
    """Sweep parts under `runs`; a staging directory renamed away mid-glob counts as none."""
    try:
        return len(list(runs.glob("*/sweep-*.parts/part-*.parquet")))
    except FileNotFoundError:
        return 0


def concurrent(argv: list[str], sweep: bool) -> Callable[[Env], Result]:
    """Start the same command twice at once: one must finish, the other be refused at once."""

    def run(env: Env) -> Result:
        started, results = time.monotonic(), [Result(None), Result(None)]
        procs = [popen(env, [env.sub(a) for a in argv]) for _ in range(2)]

        def wait(i: int) -> None:
            out, err = procs[i].communicate(timeout=180)
            results[i] = Result(procs[i].returncode, out, err, time.monotonic() - started)

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if sorted(-1 if r.rc is None else r.rc for r in results) != [0, 2]:
            problem = f"exit statuses {[r.rc for r in results]}, expected 0 and 2"
            return Result(results[1].rc, err=results[0].err + results[1].err, problem=problem)
        won = 0 if results[0].rc == 0 else 1
        r = results[1 - won]
        r.problem = error_form(r)
        if not r.problem and str(procs[won].pid) not in r.err:
            r.problem = f"the refusal does not name the other process (pid {procs[won].pid})"
        if not r.problem and r.seconds >= results[won].seconds:
            r.problem = "the refused process ended only after the other had finished"
        table = sweep_table(env.data) if sweep else None
        if table is not None:
            env.cache["reference"] = table
            r.problem = r.problem or (f"{doubled(table)} doubled rows" if doubled(table) else None)
        return r

    return run


def reference_sweep(env: Env):
    if "reference" not in env.cache:
        data = env.root / "data" / "_reference"
        headlab(
            env, ["sweep", "--quiet", "--plan", f"{env.fx}/plans/conc.toml", "--data", str(data)]
        )
        env.cache["reference"] = sweep_table(data)
    return env.cache["reference"]


def interrupted(argv: list[str], sig: int, when: str, sweep: bool = False):
    """Send `sig` when `when` happens ("progress": the bar moved, "part": two sweep parts are
    written, "staging": a staging directory exists, or a number of seconds), then check what
    is left; after SIGKILL (and for sweeps) rerun the same command and check that too."""

    def run(env: Env) -> Result:
        argv_, runs, started = [env.sub(a) for a in argv], env.data / "runs", time.monotonic()
        proc, chunks = popen(env, argv_), []

        def pump() -> None:  # stderr as it comes: the progress bar
            while chunk := proc.stderr.read(64):
                chunks.append(chunk)

        reader = threading.Thread(target=pump)
        reader.start()
        fired = {
            "progress": lambda: re.search(r"[1-9]\d*/\d+ \[", "".join(chunks)) is not None,
            "part": lambda: parts_written(runs) >= 2,
            "staging": lambda: runs.is_dir() and any(map(STAGING.match, os.listdir(runs))),
        }.get(when, lambda: time.monotonic() - started >= float(when))
        while proc.poll() is None and not fired() and time.monotonic() - started < 60:
            time.sleep(0.001)
        caught = proc.poll() is None
        if caught:
            proc.send_signal(sig)
        proc.wait(timeout=120)
        reader.join(5)
        err = "".join(chunks)
        r = Result(proc.returncode, proc.stdout.read(), err, time.monotonic() - started)
        r.note = f"signal at {when}" if caught else f"the process ended before {when}"
        r.problem = None if caught else r.note
        left = [n for n in os.listdir(runs) if n != ".locks"] if runs.is_dir() else []
        if sig == signal.SIGINT and not r.problem:
            if r.rc != 130 or not last_line(err).startswith("headlab: interrupted"):
                r.problem = f"exit {r.rc}, last line {last_line(err)!r}"
            elif left and not sweep:
                r.problem = f"left {left} under runs/"
        if not r.problem and (sig == signal.SIGKILL or sweep):
            again = headlab(env, argv_)
            if again.rc != 0:
                r.problem = f"rerun: exit {again.rc}: {last_line(again.err)}"
            elif leftovers(env.data):
                r.problem = f"the rerun left {leftovers(env.data)}"
            elif sweep:
                table, ref = sweep_table(env.data), reference_sweep(env)
                if doubled(table) or len(table) != len(ref):
                    r.problem = (
                        f"{len(table)} rows ({doubled(table)} doubled), uninterrupted {len(ref)}"
                    )
        return r

    return run


def planted_leftovers(env: Env) -> Result:
    """Staging leftovers of a dead writer go at the next write; a live writer's stay."""
    runs = env.data / "runs"
    dead = next(p for p in range(4_000_000, 4_100_000) if not Path(f"/proc/{p}").exists())
    (runs / f".ghost.{dead}.tmp-abc").mkdir(parents=True)
    (runs / f".ghost.{dead}.tmp-file").write_text("x")
    (runs / f".alive.{os.getpid()}.tmp-abc").mkdir()
    r = headlab(env, ["scan", *TINY, "--quiet", "--probes", "sink", "--data", str(env.data)])
    left = leftovers(env.data)
    if r.rc or any(".ghost." in p for p in left) or not any(".alive." in p for p in left):
        r.problem = f"exit {r.rc}; staging entries after the write: {left}"
    return r


def full_disk(free_kb: int, verb: str) -> Callable[[Env], Result]:
    def run(env: Env) -> Result:
        mount = env.root / f"tmpfs-{free_kb}-{verb}"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                                 capture_output=True, text=True)  # fmt: skip
        if mounted.returncode:
            return Result(0, note=f"skipped: cannot mount a tmpfs ({mounted.stderr.strip()})")
        env.mounts.append(mount)
        with (mount / "filler").open("wb") as handle:
            try:
                handle.write(b"\0" * ((200 - free_kb) * 1024))
                handle.flush()
            except OSError:  # the disk is full: as wanted
                pass
        before, data = snapshot(mount), mount / "data"
        what = ["--run-id", "full"] if verb == "scan" else ["--plan", f"{env.fx}/plans/conc.toml"]
        argv = [verb, *(TINY if verb == "scan" else []), "--quiet", "--data", str(data), *what]
        r = headlab(env, argv)
        left = [
            p
            for p in written(before, snapshot(mount), env)
            if p not in (str(data), str(data / "runs"))
        ]
        r.problem = error_form(r) or (f"left {left}" if left and verb == "scan" else None)
        r.note = f"tmpfs of 200k, {free_kb}k free; left {[Path(p).name for p in left]}"
        return r

    return run


def latest(env: Env) -> Result:
    for run_id in ("b-first", "a-second"):
        made = headlab(env, ["scan", *TINY, "--quiet", "--probes", "sink", "--run-id", run_id,
                             "--data", str(env.data)])  # fmt: skip
        if made.rc:
            return Result(made.rc, made.out, made.err, problem="could not make the two runs")
    r = headlab(env, ["show", "latest", "--data", str(env.data)])
    named = (r.out.splitlines() or [""])[0]
    r.problem = None if named.startswith("run a-second") else f"show latest printed {named!r}"
    return r


def listing(env: Env) -> Result:
    r = headlab(env, ["runs", "--data", str(env.store)])
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:] if line.strip()}
    readable = {"base", "rbase", "dir_link", "foreign_part", "garbage_part"}  # parts: unfinished
    broken = [p.name for p in (env.store / "runs").iterdir()
              if p.name not in readable and not p.name.startswith((".", "sweep-"))]  # fmt: skip
    bad = [n for n in broken if "unreadable" not in rows.get(n, "unreadable")]
    bad += [n for n in ("base", "rbase") if " ok " not in rows.get(n, "") + " "]
    bad += ["dir_link listed"] if "dir_link" in rows else []
    r.problem = f"exit {r.rc}; wrongly listed: {bad}" if r.rc or bad else None
    return r
