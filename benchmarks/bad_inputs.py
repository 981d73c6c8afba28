"""Bad inputs and faults: each must end in one `headlab: error: ...` line, exit 2, nothing written.

    .venv/bin/python benchmarks/bad_inputs.py --json bad_inputs.json [--only SUBSTRING]

Fixtures (prompt files, plans, model directories, stored runs) are built in a temporary
directory; every case is a subprocess of `.venv/bin/headlab` on `tiny-random`. A case is
"clear" (exit 2, stderr's last line `headlab...error...`, nothing else but argparse's usage,
no traceback, nothing written), "vague" (clear, but the message does not name what it should),
"traceback", "silent" (exit 0 where an error was expected) or "other"; cases with their own
predicate (success expected, signals, concurrency) are "pass" or "fail".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLAB = ROOT / ".venv" / "bin" / "headlab"
TINY = ["--model", "tiny-random"]
CLASSES = ("clear", "vague", "traceback", "silent", "other", "pass", "fail")


@dataclass
class Result:
    rc: int | None
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    info: dict = field(default_factory=dict)  # special cases: info["problem"] = None or why


@dataclass
class Case:
    name: str
    klass: str
    argv: list[str]
    expect: str = "error"  # error | ok | either (ok or a clear error) | special
    names: tuple[str, ...] = ()  # what the error message must mention
    pure: bool = True  # must write nothing
    timeout: float = 120
    max_s: float | None = None
    special: Callable[[Env], Result] | None = None
    check: Callable[[Result, Env], str | None] | None = None  # for expect="ok"


@dataclass
class Env:
    root: Path
    fx: Path
    store: Path
    cwd: Path
    environ: dict
    data: Path = Path()
    cache: dict = field(default_factory=dict)
    mounts: list = field(default_factory=list)

    def sub(self, text: str) -> str:
        for key in ("data", "store", "fx", "root"):
            text = text.replace("{" + key + "}", str(getattr(self, key)))
        return text


def headlab(env: Env, argv: list[str], timeout: float = 120) -> Result:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(HEADLAB), *argv], cwd=env.cwd, env=env.environ, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        text = [(s or b"").decode(errors="replace") if isinstance(s, bytes) else (s or "")
                for s in (expired.stdout, expired.stderr)]  # fmt: skip
        return Result(None, text[0], text[1], timeout)
    return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def popen(env: Env, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(HEADLAB), *argv], cwd=env.cwd, env=env.environ, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
    )  # fmt: skip


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def last_line(text: str) -> str:
    found = lines(text)
    return found[-1].strip() if found else ""


# --- fixtures: one function per kind -------------------------------------------------------


def prompt_files(fx: Path) -> None:
    d = fx / "prompts"
    d.mkdir()
    ok = '{"id": "a", "text": "the cat sat on the mat"}\n'
    texts = {
        "malformed3.jsonl": ok + '{"id": "b", "text": "x"}\n{"id": "c", "text": \n',
        "list.jsonl": '["the", "cat"]\n',
        "scalar.jsonl": '"just a string"\n',
        "notext.jsonl": '{"id": "a", "body": "x"}\n',
        "textnum.jsonl": '{"id": "a", "text": 42}\n',
        "empty_text.jsonl": '{"id": "a", "text": ""}\n',
        "blank_text.jsonl": '{"id": "a", "text": "   \\n "}\n',
        "dup_ids.jsonl": ok + ok,
        "dup_ids_types.jsonl": '{"id": 5, "text": "a b"}\n{"id": "5", "text": "c d"}\n',
        "id_object.jsonl": '{"id": {"x": 1}, "text": "a b"}\n',
        "surrogate.jsonl": '{"id": "a", "text": "bad \\ud800 here"}\n',
        "trailing.jsonl": '{"id": "a", "text": "a b"} trailing\n',
        "empty.jsonl": "",
        "blank_lines.jsonl": "\n\n   \n",
        "toolong.jsonl": json.dumps({"id": "toolong", "text": "the cat " * 1500}) + "\n",
    }
    for name, text in texts.items():
        (d / name).write_text(text, encoding="utf-8")
    (d / "huge20mb.jsonl").write_text(json.dumps({"id": "huge", "text": "cat " * 5_000_000}))
    (d / "binary.jsonl").write_bytes(os.urandom(8192))
    (d / "latin1.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    (d / "adir").mkdir()
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    (d / "dangling.jsonl").symlink_to(d / "nowhere.jsonl")
    words = "the cat sat on the mat and it was good for a while ".split()
    with (d / "big.jsonl").open("w") as handle:  # ~7 s of scanning, for the signal cases
        for i in range(64):
            handle.write(json.dumps({"id": str(i), "text": " ".join(words * 30)}) + "\n")


def plan(top: str = "", body: str = '[single_head]\nmodes = ["zero"]\n',
         tasks: str = "[tasks.lm]\nn_prompts = 2\n", model: str = '"tiny-random"') -> str:  # fmt: skip
    return f'model = {model}\nname = "p"\n{top}\n{tasks}\n{body}'


def top_k(extra: str = "k = [1]") -> str:
    return f'[[top_k]]\nmetric = "alpha"\nprobe = "sink"\nposition = 0\n{extra}\n'


def strength(kind: str = "scale", values: str = "[0.5]", heads: str = "[[0, 0]]") -> str:
    return f'[[strength]]\nkind = "{kind}"\nvalues = {values}\nheads = {heads}\n'


PLANS = {
    "invalid_toml": 'model = "tiny-random"\n[single_head\nmodes = ["zero"]\n',
    "unknown_key": plan(top='colour = "red"'),
    "unknown_single_key": plan(body='[single_head]\nmodes = ["zero"]\nlayer = [0]\n'),
    "single_head_string": plan(top='single_head = "zero"', body=""),
    "layer99": plan(body='[single_head]\nmodes = ["zero"]\nlayers = [99]\n'),
    "layer_negative": plan(body='[single_head]\nmodes = ["zero"]\nlayers = [-1]\n'),
    "layers_str": plan(body='[single_head]\nmodes = ["zero"]\nlayers = ["a"]\n'),
    "k_too_big": plan(body=top_k("k = [100]")),
    "k_zero": plan(body=top_k("k = [0]")),
    "k_missing": plan(body=top_k("")),
    "k_string": plan(body=top_k('k = "many"')),
    "topk_metric_unknown": plan(body=top_k("k = [1]").replace('"alpha"', '"nosuch"')),
    "topk_mode_unknown": plan(body=top_k('k = [1]\nmode = "bogus"')),
    "topk_table_not_array": plan(body='[top_k]\nmetric = "alpha"\nk = [1]\n'),
    "unknown_task": plan(tasks="[tasks.nosuch]\n"),
    "unknown_task_param": plan(tasks="[tasks.lm]\nfoo = 1\n"),
    "task_zero_prompts": plan(tasks="[tasks.lm]\nn_prompts = 0\n"),
    "task_param_type": plan(tasks='[tasks.lm]\nn_prompts = "many"\n'),
    "tasks_empty": plan(top="tasks = {}", tasks=""),
    "tasks_string": plan(top='tasks = "lm"', tasks=""),
    "ioi_path_missing": plan(tasks='[tasks.ioi]\npath = "/nonexistent/pairs.jsonl"\n'),
    "mode_unknown": plan(body='[single_head]\nmodes = ["bogus"]\n'),
    "modes_empty": plan(body="[single_head]\nmodes = []\n"),
    "modes_twice": plan(body='[single_head]\nmodes = ["zero", "zero"]\n'),
    "strength_negative_scale": plan(body=strength("scale", "[-1.0]")),
    "strength_negative_softpag": plan(body=strength("softpag", "[-0.5]")),
    "strength_negative_act": plan(body=strength("act", "[-0.4]")),
    "strength_negative_keep": plan(body=strength("redistribute", "[-0.5]")),
    "strength_keep_above_1": plan(body=strength("redistribute", "[1.5]")),
    "strength_head_range": plan(body=strength(heads="[[9, 9]]")),
    "strength_heads_string": plan(body=strength(heads='"0.0"')),
    "strength_kind_unknown": plan(body=strength("boost")),
    "strength_values_str": plan(body=strength(values='["a"]')),
    "strength_values_empty": plan(body=strength(values="[]")),
    "strength_both": plan(body=strength() + 'top = { metric = "alpha", k = 1 }\n'),
    "batch_zero": plan(top="batch_size = 0"),
    "batch_string": plan(top='batch_size = "x"'),
    "copies_zero": plan(top="copies = 0"),
    "copies_negative": plan(top="copies = -1"),
    "model_unknown": plan(model='"nosuch-model"'),
    "model_int": plan(model="5"),
    "name_traversal": plan().replace('name = "p"', 'name = "../../escaped"'),
    "name_slash": plan().replace('name = "p"', 'name = "a/b"'),
    "name_empty": plan().replace('name = "p"', 'name = ""'),
    "attribution_unknown": plan(top='attribution = ["bogus"]'),
    "attribution_niah": plan(top='attribution = ["zero"]', tasks="[tasks.niah]\n", body=""),
    "nothing_to_do": plan(body=""),
}
CONC_PLAN = ('model = "tiny-random"\nname = "conc"\ncopies = 1\nbatch_size = 4\n'
             '[tasks.lm]\nn_prompts = 16\n[single_head]\nmodes = ["zero", "uniform"]\n')  # fmt: skip


def plan_files(fx: Path) -> None:
    d = fx / "plans"
    d.mkdir()
    for name, text in {**PLANS, "conc": CONC_PLAN}.items():
        (d / f"{name}.toml").write_text(text)
    (d / "binary.toml").write_bytes(os.urandom(2048))
    (d / "adir.toml").mkdir()


def model_dirs(fx: Path) -> None:
    from probes.models.tiny import tiny_llama

    d = fx / "models"
    real = d / "real"
    model, tokenizer = tiny_llama()
    model.save_pretrained(real)
    tokenizer.save_pretrained(real)
    weights = (real / "model.safetensors").read_bytes()

    def variant(name: str, drop: tuple[str, ...] = (), **files: bytes | str) -> None:
        shutil.copytree(real, d / name)
        for gone in drop:
            (d / name / gone).unlink(missing_ok=True)
        for file, data in files.items():
            path = d / name / file.replace("__", ".")
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data)

    (d / "empty").mkdir()
    variant("random_weights", model__safetensors=os.urandom(len(weights)))
    variant("truncated_weights", model__safetensors=weights[: len(weights) // 2])
    variant("bad_config", config__json="{not json")
    variant("no_weights", drop=("model.safetensors",))
    variant("pickle_only", drop=("model.safetensors",), pytorch_model__bin=os.urandom(4096))
    config = json.loads((real / "config.json").read_text())
    variant("unknown_type", config__json=json.dumps({**config, "model_type": "nosuchtype"}))
    variant("wrong_shape", config__json=json.dumps({**config, "hidden_size": 64}))
    variant("no_tokenizer", drop=("tokenizer.json", "tokenizer_config.json"))
    (d / "afile").write_text("not a model\n")


def write_parquet(path: Path, metadata: dict | None = None, table=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table if table is not None else pa.table({"a": [1, 2], "b": ["x", "y"]})
    pq.write_table(table.replace_schema_metadata(metadata), path)


def stored_runs(env: Env) -> None:
    """A good tiny scan `base` and broken copies of it, in the data dir `store`."""
    import pyarrow.parquet as pq

    result = headlab(env, ["scan", *TINY, "--quiet", "--probes", "sink,attention_stats",
                           "--data", str(env.store), "--run-id", "base"])  # fmt: skip
    assert result.rc == 0, result.err
    runs, outside = env.store / "runs", env.root / "outside"
    base, res = runs / "base", "results.parquet"
    shutil.copytree(base, outside / "base")

    def copy(name: str) -> Path:
        shutil.copytree(base, runs / name)
        return runs / name

    data = (base / res).read_bytes()
    (copy("truncated") / res).write_bytes(data[: len(data) // 2])
    (copy("garbage") / res).write_bytes(os.urandom(len(data)))
    (copy("no_manifest") / "manifest.json").unlink()
    (copy("bad_manifest") / "manifest.json").write_text("{oops")
    (copy("list_manifest") / "manifest.json").write_text("[1, 2]")
    write_parquet(copy("foreign") / res)
    table = pq.read_table(base / res)
    write_parquet(copy("schema_v1") / res, {b"headlab.schema": b"1"}, table)
    (copy("no_tables") / res).unlink()
    write_parquet(copy("foreign_sweep") / "sweep-x.parquet")
    (copy("results_link") / res).unlink()
    (runs / "results_link" / res).symlink_to(outside / "base" / res)
    (copy("manifest_link") / "manifest.json").unlink()
    (runs / "manifest_link" / "manifest.json").symlink_to(outside / "base" / "manifest.json")
    (runs / "dir_link").symlink_to(outside / "base")
    for name, writer in (("foreign_part", write_parquet), ("garbage_part", None)):
        parts = copy(name) / "sweep-conc.parts"
        parts.mkdir()
        part = parts / "part-0000.parquet"
        if writer:
            writer(part)
        else:
            part.write_bytes(os.urandom(4096))
    (env.root / "afile").write_text("a file where a directory is expected\n")
    (env.root / "runs_file" / "runs").parent.mkdir()
    (env.root / "runs_file" / "runs").write_text("not a directory\n")


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
    allowed = {str(env.data), str(env.data / "runs")}  # the parents of runs/.locks
    changed = [p for p, v in after.items() if before.get(p) != v and p not in allowed]
    changed += [f"(removed) {p}" for p in before if p not in after]
    return sorted(changed)


def traceback_summary(err: str) -> str:
    tail = err[err.rfind("Traceback") :]
    frames = re.findall(r'File "([^"]+)", line (\d+)', tail)
    ours = [(f, n) for f, n in frames if f.startswith(str(ROOT)) and "/.venv/" not in f]
    where = f"{Path(ours[-1][0]).relative_to(ROOT)}:{ours[-1][1]}" if ours else "no headlab frame"
    exc = next((line for line in reversed(lines(tail)) if not line.startswith(" ")), "?")
    return f"{exc.strip()[:200]} @ {where}"


def error_form(r: Result) -> str | None:
    """Why `r` is not one clear error line with exit 2 (None if it is)."""
    if r.rc is None:
        return f"timeout after {r.seconds:.0f} s"
    if r.rc != 2:
        return f"exit status {r.rc}"
    found = lines(r.err)
    if not found:
        return "exit 2 with empty stderr"
    last = found[-1].strip()
    if not (last.startswith("headlab") and "error" in last):
        return "last stderr line is not a headlab error"
    if len(found) > 1 and not found[0].startswith("usage:"):
        return f"{len(found)} stderr lines"
    return None


def classify(case: Case, r: Result, changes: list[str], env: Env) -> tuple[str, str]:
    if "Traceback" in r.err:
        return "traceback", traceback_summary(r.err)
    if case.expect == "special":
        problem = r.info.get("problem")
        return ("fail", problem) if problem else ("pass", r.info.get("note", ""))
    if case.max_s and r.seconds > case.max_s:
        return "other", f"took {r.seconds:.0f} s (limit {case.max_s:.0f} s)"
    if case.expect in ("ok", "either") and r.rc == 0:
        problem = case.check(r, env) if case.check else None
        return ("fail", problem) if problem else ("pass", "exit 0")
    if case.expect == "ok":
        return "fail", error_form(r) or f"exit {r.rc}"
    if r.rc == 0:
        return "silent", "exit 0" + (f"; wrote {len(changes)} paths" if changes else "")
    form = error_form(r)
    if form:
        return "other", form
    if case.pure and changes:
        return "other", f"wrote {len(changes)} paths, e.g. {changes[0]}"
    missing = [n for n in case.names if env.sub(n).lower() not in last_line(r.err).lower()]
    if missing:
        return "vague", f"message does not name {missing}"
    return "clear", ""


# --- special cases: signals, concurrency, full disk, latest ---------------------------------


def sweep_table(data: Path, name: str = "conc"):
    import pandas as pd

    paths = sorted((data / "runs").glob(f"*/sweep-{name}.parquet"))
    return pd.read_parquet(paths[0]) if paths else None


def duplicated_rows(table) -> int:
    keys = [c for c in table.columns if c not in ("value", "run_id")]
    return int(table.duplicated(subset=keys).sum())


def leftovers(data: Path) -> list[str]:
    return [str(p) for p in (data / "runs").rglob("*") if ".tmp-" in p.name]


def wait_for(predicate: Callable[[], bool], limit: float, step: float = 0.001) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def finish(proc: subprocess.Popen, started: float, timeout: float = 120) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Result(None, out, err, timeout)
    return Result(proc.returncode, out, err, time.monotonic() - started)


def concurrent(argv: list[str], expect_pid: bool) -> Callable[[Env], Result]:
    def run(env: Env) -> Result:
        argv_ = [env.sub(a) for a in argv]
        started = time.monotonic()
        procs = [popen(env, argv_), popen(env, argv_)]
        results = [finish(p, started) for p in procs]
        rcs = sorted(r.rc if r.rc is not None else -999 for r in results)
        if rcs != [0, 2]:
            return Result(rcs[-1], "", results[0].err + results[1].err, 0, {
                "problem": f"exit statuses {rcs}, expected one 0 and one 2"})  # fmt: skip
        winner, loser = (0, 1) if results[0].rc == 0 else (1, 0)
        r = results[loser]
        problem = error_form(r)
        if not problem and expect_pid and str(procs[winner].pid) not in r.err:
            problem = f"refusal does not name the other process (pid {procs[winner].pid})"
        if not problem and r.seconds >= results[winner].seconds:
            problem = "the refused process did not end before the other finished"
        table = sweep_table(env.data) if expect_pid else None
        if not problem and table is not None and duplicated_rows(table):
            problem = f"{duplicated_rows(table)} duplicated rows in the finished sweep"
        if table is not None:
            env.cache["reference"] = table
        return Result(r.rc, r.out, r.err, r.seconds, {"problem": problem})

    return run


def reference_sweep(env: Env):
    if "reference" not in env.cache:
        data = env.root / "data" / "_reference"
        headlab(env, ["sweep", "--quiet", "--plan", str(env.fx / "plans" / "conc.toml"),
                      "--data", str(data)])  # fmt: skip
        env.cache["reference"] = sweep_table(data)
    return env.cache["reference"]


def interrupted(argv: list[str], sig: int, when: str, sweep: bool = False):
    """Send `sig` when `when` happens ("progress", "part", "staging", or seconds), then check."""

    def run(env: Env) -> Result:
        argv_ = [env.sub(a) for a in argv]
        runs, started = env.data / "runs", time.monotonic()
        proc, progress = popen(env, argv_), []

        def pump() -> None:  # stderr as it comes (the progress bar)
            while chunk := proc.stderr.read(64):
                progress.append(chunk)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        staging = re.compile(r"^\..+\.\d+\.tmp-")
        fired = {
            "progress": lambda: re.search(r"[1-9]\d*/\d+ \[", "".join(progress)) is not None,
            "part": lambda: len(list(runs.glob("*/sweep-*.parts/part-*.parquet"))) >= 2,
            "staging": lambda: runs.is_dir() and any(staging.match(n) for n in os.listdir(runs)),
        }.get(when, lambda: time.monotonic() - started >= float(when))
        caught = wait_for(lambda: fired() or proc.poll() is not None, 60) and proc.poll() is None
        if caught:
            proc.send_signal(sig)
        proc.wait(timeout=120)
        reader.join(5)
        out, text = proc.stdout.read(), "".join(progress)
        r = Result(proc.returncode, out, text, time.monotonic() - started)
        note = f"signal sent at {when}" if caught else f"process ended before {when}; no signal"
        r.info["note"], problem = note, None if caught else note
        if sig == signal.SIGINT and not problem:
            if r.rc != 130 or not last_line(text).startswith("headlab: interrupted"):
                problem = f"exit {r.rc}, last line {last_line(text)!r}"
            elif not sweep and runs.is_dir() and [n for n in os.listdir(runs) if n != ".locks"]:
                problem = f"left {os.listdir(runs)} under runs/"
        if not problem and (sig == signal.SIGKILL or sweep):
            again = headlab(env, argv_)
            if again.rc != 0:
                problem = f"rerun exit {again.rc}: {last_line(again.err)}"
            elif left := leftovers(env.data):
                problem = f"rerun left {left}"
            elif sweep:
                table, ref = sweep_table(env.data), reference_sweep(env)
                if duplicated_rows(table) or len(table) != len(ref):
                    problem = (
                        f"{len(table)} rows ({duplicated_rows(table)} doubled), ref {len(ref)}"
                    )
        r.info["problem"] = problem
        return r

    return run


def planted_leftovers(env: Env) -> Result:
    runs = env.data / "runs"
    dead = next(p for p in range(4_000_000, 4_100_000) if not Path(f"/proc/{p}").exists())
    (runs / f".ghost.{dead}.tmp-abc").mkdir(parents=True)
    (runs / f".ghost.{dead}.tmp-file").write_text("x")
    alive = runs / f".alive.{os.getpid()}.tmp-abc"  # a live writer's: must be kept
    alive.mkdir()
    r = headlab(env, ["scan", *TINY, "--quiet", "--probes", "sink", "--data", str(env.data)])
    left = [p for p in leftovers(env.data) if ".ghost." in p]
    problem = None
    if r.rc:
        problem = f"exit {r.rc}: {last_line(r.err)}"
    elif left:
        problem = f"dead writers' leftovers kept: {left}"
    elif not alive.exists():
        problem = "a live writer's staging directory was removed"
    r.info["problem"] = problem
    return r


def full_disk(free_kb: int, verb: str) -> Callable[[Env], Result]:
    def run(env: Env) -> Result:
        mount = env.root / f"tmpfs-{free_kb}-{verb}"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                          capture_output=True).returncode:  # fmt: skip
            return Result(0, info={"note": "skipped: cannot mount tmpfs"})
        env.mounts.append(mount)
        with (mount / "filler").open("wb") as handle:
            try:
                handle.write(b"\0" * ((200 - free_kb) * 1024))
                handle.flush()
            except OSError:
                pass
        before, data = snapshot(mount), mount / "data"
        if verb == "scan":
            argv = ["scan", *TINY, "--quiet", "--run-id", "full", "--data", str(data)]
        else:
            argv = ["sweep", "--quiet", "--plan", str(env.fx / "plans/conc.toml"), "--data",
                    str(data)]  # fmt: skip
        r = headlab(env, argv)
        changes = [p for p in written(before, snapshot(mount), env)
                   if p not in (str(data), str(data / "runs"))]  # fmt: skip
        problem = error_form(r)
        if not problem and verb == "scan" and changes:
            problem = f"left {changes}"
        r.info.update(problem=problem, note=f"tmpfs 200k, {free_kb}k free; left {changes}")
        return r

    return run


def latest(env: Env) -> Result:
    for run_id in ("b-first", "a-second"):
        made = headlab(env, ["scan", *TINY, "--quiet", "--probes", "sink", "--run-id", run_id,
                             "--data", str(env.data)])  # fmt: skip
        if made.rc:
            return Result(made.rc, made.out, made.err, 0, {"problem": "could not make runs"})
    r = headlab(env, ["show", "latest", "--data", str(env.data)])
    named = r.out.splitlines()[0] if r.out else ""
    r.info["problem"] = None if named.startswith("run a-second") else f"show latest: {named!r}"
    return r


def listing(env: Env) -> Result:
    r = headlab(env, ["runs", "--data", str(env.store)])
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:] if line.strip()}
    broken = sorted(p.name for p in (env.store / "runs").iterdir()
                    if p.name not in ("base", ".locks", "dir_link") and not p.name.startswith("sweep-"))  # fmt: skip
    bad = [n for n in broken if "unreadable" not in rows.get(n, "unreadable")]
    bad += [] if "ok" in rows.get("base", "") else ["base not ok"]
    bad += ["dir_link listed"] if "dir_link" in rows else []
    r.info["problem"] = f"rc {r.rc}; not flagged unreadable: {bad}" if r.rc or bad else None
    return r


# --- the cases -----------------------------------------------------------------------------


def scan(*args: str) -> list[str]:
    return ["scan", *TINY, "--quiet", "--probes", "sink", "--data", "{data}", *args]


def sweep(*args: str) -> list[str]:
    return ["sweep", "--quiet", "--data", "{data}", *args]


def sweepf(*args: str) -> list[str]:
    return sweep(*TINY, "--tasks", "lm", "--single-head", "zero", *args)


def stored_sweep(*args: str) -> list[str]:
    return sweep(*TINY, "--tasks", "lm", "--metrics-run", "base", "--data", "{store}", *args)


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    P, M = "{fx}/prompts/", "{fx}/models/"
    for name, args, names in [
        ("batch-size 0", ["--batch-size", "0"], ("batch",)),
        ("batch-size x", ["--batch-size", "x"], ("batch",)),
        ("batch-size -3", ["--batch-size", "-3"], ("batch",)),
        ("max-tokens 1", ["--max-tokens", "1"], ("max",)),
        ("max-tokens 0", ["--max-tokens", "0"], ("max",)),
        ("max-tokens abc", ["--max-tokens", "abc"], ("max",)),
        ("device gpu0", ["--device", "gpu0"], ("gpu0",)),
        ("device cuda (no GPU)", ["--device", "cuda"], ("cuda",)),
        ("device cuda:7", ["--device", "cuda:7"], ("cuda",)),
        ("device mps", ["--device", "mps"], ("mps",)),
        ("device empty", ["--device", ""], ("device",)),
        ("path fast + divergence", ["--path", "fast", "--probes", "divergence"], ("divergence",)),
        ("path slow", ["--path", "slow"], ("path",)),
        ("param no dot", ["--param", "sinkepsilon0.2"], ("sinkepsilon0.2",)),
        ("param unknown name", ["--param", "sink.nope=1"], ("nope",)),
        ("param negative epsilon", ["--param", "sink.epsilon=-1"], ("epsilon",)),
        ("param epsilon abc", ["--param", "sink.epsilon=abc"], ("epsilon",)),
        ("param epsilon nan", ["--param", "sink.epsilon=nan"], ("epsilon",)),
        ("param n_positions 1.5", ["--param", "sink.n_positions=1.5"], ("n_positions",)),
        ("param lengths a,b", ["--probes", "retrieval", "--param", "retrieval.lengths=a,b"],
         ("lengths",)),
        ("param lengths > context", ["--probes", "retrieval", "--param",
                                     "retrieval.lengths=4096"], ("retrieval.lengths",)),
        ("param unselected probe", ["--param", "attention_stats.nope=1"], ("attention_stats",)),
        ("param valid but unselected", ["--param", "retrieval.max_new_tokens=3"], ("retrieval",)),
        ("param unknown probe", ["--param", "nosuch.x=1"], ("nosuch",)),
        ("probes unknown", ["--probes", "nosuch"], ("nosuch",)),
        ("probes empty", ["--probes", ""], ("probe",)),
        ("probes twice", ["--probes", "sink,sink"], ("sink",)),
        ("model unknown name", ["--model", "nosuch-model"], ("nosuch-model",)),
        ("model tiny-random-abc", ["--model", "tiny-random-abc"], ("tiny-random-abc",)),
        ("model empty", ["--model", ""], ("model",)),
        ("seed x", ["--seed", "x"], ("seed",)),
        ("seed 2**80", ["--seed", str(2**80)], ("seed",)),
        ("run-id duplicate", ["--data", "{store}", "--run-id", "base"], ("base",)),
        ("run-id traversal", ["--run-id", "../escape"], ("../escape",)),
        ("run-id hidden", ["--run-id", ".hidden"], (".hidden",)),
        ("run-id slash", ["--run-id", "a/b"], ("a/b",)),
        ("run-id empty", ["--run-id", ""], ("run",)),
        ("run-id 200 chars", ["--run-id", "r" * 200], ("run id",)),
        ("run-id 'latest'", ["--run-id", "latest"], ("latest",)),
        ("data is a file", ["--data", "{root}/afile"], ("afile",)),
        ("data under a file", ["--data", "{root}/afile/sub"], ("afile",)),
        ("data runs/ is a file", ["--data", "{root}/runs_file"], ("runs",)),
        ("unknown flag", ["--nope"], ("--nope",)),
    ]:  # fmt: skip
        add(Case(f"scan {name}", "flags", scan(*args), names=names))
    add(Case("model HF id not cached", "flags", scan("--model", "HuggingFaceTB/NoSuch-1M"),
             names=("HuggingFaceTB/NoSuch-1M",), max_s=30))  # fmt: skip
    add(Case("no verb", "flags", []))
    add(Case("unknown verb", "flags", ["frobnicate"]))
    for name, args in [
        ("batch-size 0", sweepf("--batch-size", "0")), ("copies 0", sweepf("--copies", "0")),
        ("copies -2", sweepf("--copies", "-2")), ("k x", sweepf("--k", "x")),
        ("seeds x", sweepf("--seeds", "x")),
        ("tasks nosuch", sweep(*TINY, "--tasks", "nosuch", "--single-head", "zero")),
        ("tasks empty", sweep(*TINY, "--tasks", "", "--single-head", "zero")),
        ("single-head bogus", sweep(*TINY, "--tasks", "lm", "--single-head", "bogus")),
        ("single-head empty", sweep(*TINY, "--tasks", "lm", "--single-head", "")),
        ("no plan at all", sweep()),
        ("strength scale=abc", sweep(*TINY, "--strength", "scale=abc", "--strength-heads", "0.0")),
        ("strength bogus kind", sweep(*TINY, "--strength", "bogus=1", "--strength-heads", "0.0")),
        ("strength head 9.9", sweep(*TINY, "--strength", "scale=1", "--strength-heads", "9.9")),
        ("strength heads x", sweep(*TINY, "--strength", "scale=1", "--strength-heads", "x")),
        ("strength heads 0.0.1", sweep(*TINY, "--strength", "scale=1", "--strength-heads", "0.0.1")),
        ("strength no heads", sweep(*TINY, "--strength", "scale=1")),
        ("strength no values", sweep(*TINY, "--strength", "scale=", "--strength-heads", "0.0")),
        ("strength scale=-1", sweep(*TINY, "--strength", "scale=-1", "--strength-heads", "0.0")),
        ("strength keep=1.5", sweep(*TINY, "--strength", "redistribute=1.5",
                                    "--strength-heads", "0.0")),
        ("top-metric without runs", sweep(*TINY, "--tasks", "lm", "--top-metric", "alpha")),
        ("top-metric nosuch", stored_sweep("--top-metric", "nosuch")),
        ("top k 0", stored_sweep("--top-metric", "alpha", "--k", "0")),
        ("top k 100", stored_sweep("--top-metric", "alpha", "--k", "100")),
        ("top-position 999", stored_sweep("--top-metric", "alpha", "--top-position", "999")),
        ("top-mode bogus", stored_sweep("--top-metric", "alpha", "--top-mode", "bogus")),
        ("metrics-run nosuch", stored_sweep("--top-metric", "alpha", "--metrics-run", "nosuch")),
        ("metrics-run truncated", stored_sweep("--top-metric", "alpha",
                                               "--metrics-run", "truncated")),
        ("name traversal", sweepf("--name", "../../escaped")),
        ("run traversal", sweepf("--run", "../escaped")),
        ("run of another model", sweepf("--model", "tiny-random-3", "--run", "base",
                                        "--data", "{store}")),
        ("run truncated", sweepf("--run", "truncated", "--data", "{store}")),
        ("run without manifest", sweepf("--run", "no_manifest", "--data", "{store}")),
        ("device gpu0", sweepf("--device", "gpu0")), ("device cuda", sweepf("--device", "cuda")),
        ("attribution bogus", sweep(*TINY, "--tasks", "lm", "--attribution", "bogus")),
        ("attribution on niah", sweep(*TINY, "--tasks", "niah", "--attribution", "zero")),
        ("model unknown", sweep("--model", "nosuch-model", "--single-head", "zero")),
        ("data is a file", sweepf("--data", "{root}/afile")),
        ("plan + flags", sweep("--plan", "{fx}/plans/conc.toml", "--tasks", "lm")),
    ]:  # fmt: skip
        add(Case(f"sweep {name}", "flags", args))
    for verb, name, args in [
        ("show", "top 0", ["base", "--top", "0"]), ("show", "top -1", ["base", "--top", "-1"]),
        ("show", "top x", ["base", "--top", "x"]), ("show", "nosuch run", ["nosuch"]),
        ("show", "run-id traversal", ["../runs/base"]),
        ("show", "latest, no runs", ["latest", "--data", "{data}"]),
        ("runs", "data is a file", ["--data", "{root}/afile"]),
        ("runs", "runs/ is a file", ["--data", "{root}/runs_file"]),
        ("dashboard", "port 0", ["--port", "0"]), ("dashboard", "port 70000", ["--port", "70000"]),
        ("mask-retrieval", "not a retrieval run", ["base"]),
        ("mask-retrieval", "ks 0", ["base", "--ks", "0"]),
        ("mask-retrieval", "ks x", ["base", "--ks", "x"]),
        ("mask-retrieval", "modes bogus", ["base", "--modes", "bogus"]),
        ("mask-retrieval", "depths 200", ["base", "--depths", "200"]),
        ("mask-retrieval", "rows-per-batch 0", ["base", "--rows-per-batch", "0"]),
        ("mask-retrieval", "device gpu0", ["base", "--device", "gpu0"]),
        ("prepare", "unknown model", ["nosuch-model"]),
        ("prepare", "tiny-random", ["tiny-random"]),
    ]:  # fmt: skip
        data = [] if verb == "prepare" else ["--data", "{store}"]
        quiet = ["--quiet"] if verb == "mask-retrieval" else []
        add(Case(f"{verb} {name}", "flags", [verb, *data, *quiet, *args]))
    ind = ["induction-check", *TINY, "--seeds", "1", "--n-sequences", "2"]
    for name, args in [
        ("top-k 0", ["--top-k", "0"]), ("top-k 9 (8 heads)", ["--top-k", "9"]),
        ("n-sequences 0", ["--n-sequences", "0"]), ("half-len 0", ["--half-len", "0"]),
        ("half-len 200 (> context)", ["--half-len", "200"]), ("seeds empty", ["--seeds", ""]),
        ("seeds x", ["--seeds", "x"]), ("batch-size 0", ["--batch-size", "0"]),
        ("device gpu0", ["--device", "gpu0"]), ("model nosuch", ["--model", "nosuch-model"]),
    ]:  # fmt: skip
        add(Case(f"induction-check {name}", "flags", [*ind, *args]))
    bench = ["bench", *TINY, "--tokens", "64", "--repeats", "1", "--methods", "plain",
             "--data", "{data}"]  # fmt: skip
    for name, args in [
        ("tokens 0", ["--tokens", "0"]), ("tokens x", ["--tokens", "x"]),
        ("repeats 0", ["--repeats", "0"]), ("methods bogus", ["--methods", "bogus"]),
        ("timeout-s 0", ["--timeout-s", "0"]), ("tokens 4096 (> context)", ["--tokens", "4096"]),
        ("data is a file", ["--data", "{root}/afile"]), ("model nosuch", ["--model", "nosuch"]),
    ]:  # fmt: skip
        add(Case(f"bench {name}", "flags", [*bench, *args], timeout=180))
    for name, file, names, extra in [
        ("malformed JSON on line 3", "malformed3.jsonl", (":3",), []),
        ("a list, not an object", "list.jsonl", (":1",), []),
        ("a JSON string line", "scalar.jsonl", (":1",), []),
        ("missing text", "notext.jsonl", ("text",), []),
        ("text is a number", "textnum.jsonl", ("text",), []),
        ("empty text", "empty_text.jsonl", (":1",), []),
        ("whitespace text", "blank_text.jsonl", (":1",), []),
        ("duplicate ids", "dup_ids.jsonl", ("'a'",), []),
        ("ids 5 and '5'", "dup_ids_types.jsonl", ("5",), []),
        ("id is an object", "id_object.jsonl", ("id",), []),
        ("lone surrogate", "surrogate.jsonl", (":1",), []),
        ("trailing garbage", "trailing.jsonl", (":1",), []),
        ("empty file", "empty.jsonl", ("empty.jsonl",), []),
        ("only blank lines", "blank_lines.jsonl", ("blank_lines.jsonl",), []),
        ("binary file", "binary.jsonl", ("binary.jsonl",), []),
        ("latin-1 bytes", "latin1.jsonl", ("latin1.jsonl",), []),
        ("a directory", "adir", ("adir",), []),
        ("missing file", "nosuch.jsonl", ("nosuch.jsonl",), []),
        ("symlink loop", "loop.jsonl", ("loop.jsonl",), []),
        ("dangling symlink", "dangling.jsonl", ("dangling.jsonl",), []),
        ("longer than context", "toolong.jsonl", ("toolong",), ["--max-tokens", "none"]),
        ("20 MB prompt, no truncation", "huge20mb.jsonl", ("huge",), ["--max-tokens", "none"]),
    ]:  # fmt: skip
        add(Case(f"prompts {name}", "prompts", scan("--prompts", P + file, *extra), names=names))
    add(Case("prompts /dev/zero", "prompts", scan("--prompts", "/dev/zero"), timeout=60,
             names=("/dev/zero",)))  # fmt: skip
    add(Case("prompts empty path", "prompts", scan("--prompts", ""), names=("prompt",)))
    add(Case("prompts 20 MB prompt, truncated", "prompts", scan("--prompts", P + "huge20mb.jsonl"),
             expect="either", pure=False, timeout=300))  # fmt: skip
    stored = {"k_too_big", "k_zero", "topk_metric_unknown", "topk_mode_unknown", "strength_both"}
    for name in PLANS:
        where = ["--metrics-run", "base", "--data", "{store}"] if name in stored else []
        add(Case(f"plan {name}", "plans", sweep("--plan", f"{{fx}}/plans/{name}.toml", *where),
                 names=(f"{name}.toml",)))  # fmt: skip
    for name in ("binary.toml", "adir.toml", "nosuch.toml"):
        add(Case(f"plan file {name}", "plans", sweep("--plan", "{fx}/plans/" + name),
                 names=(name,)))  # fmt: skip
    for name in ("empty", "random_weights", "truncated_weights", "bad_config", "no_weights",
                 "pickle_only", "unknown_type", "wrong_shape", "no_tokenizer", "afile"):  # fmt: skip
        add(Case(f"model dir {name}: scan", "models", scan("--model", M + name), names=(name,)))
    add(Case("model dir real (control)", "models", scan("--model", M + "real"), "ok", pure=False))
    add(Case("model dir random_weights: induction-check", "models",
             [*ind, "--model", M + "random_weights"], names=("random_weights",)))  # fmt: skip
    add(Case("model dir random_weights: sweep", "models",
             sweep("--model", M + "random_weights", "--tasks", "lm", "--single-head", "zero"),
             names=("random_weights",)))  # fmt: skip
    broken = ["truncated", "garbage", "no_manifest", "bad_manifest", "list_manifest", "foreign",
              "schema_v1", "no_tables", "foreign_sweep", "results_link", "manifest_link",
              "dir_link"]  # fmt: skip
    for run in broken:
        add(Case(f"show {run}", "runs", ["show", run, "--data", "{store}"], names=(run,)))
    for run in ("truncated", "no_manifest", "bad_manifest", "dir_link", "schema_v1"):
        add(Case(f"mask-retrieval {run}", "runs",
                 ["mask-retrieval", run, "--quiet", "--data", "{store}"], names=(run,)))  # fmt: skip
    for run in ("foreign_part", "garbage_part"):
        add(Case(f"sweep resume over {run}", "runs", sweep("--plan", "{fx}/plans/conc.toml",
                 "--run", run, "--data", "{store}"), names=("part-0000",), pure=False))  # fmt: skip
    add(Case("runs lists broken runs as unreadable", "runs", [], "special", special=listing))
    add(Case("show latest = newest by time", "runs", [], "special", special=latest, pure=False))
    conc = sweep("--plan", "{fx}/plans/conc.toml")
    add(Case("two sweeps, same plan, at once", "concurrency", [], "special", pure=False,
             special=concurrent(conc, expect_pid=True)))  # fmt: skip
    add(Case("two scans, same run id, at once", "concurrency", [], "special", pure=False,
             special=concurrent(scan("--run-id", "same"), expect_pid=False)))  # fmt: skip
    big = ["scan", *TINY, "--prompts", P + "big.jsonl", "--data", "{data}", "--run-id", "k1"]
    for name, argv, sig, when in [
        ("SIGINT at startup (0.3 s)", scan(), signal.SIGINT, "0.3"),
        ("SIGINT during model load (2.5 s)", scan(), signal.SIGINT, "2.5"),
        ("SIGINT during scan", big, signal.SIGINT, "progress"),
        ("SIGKILL during scan write, rerun", [*big, "--quiet"], signal.SIGKILL, "staging"),
        ("SIGKILL during scan, rerun", big, signal.SIGKILL, "progress"),
    ]:
        add(Case(name, "faults", [], "special", pure=False, special=interrupted(argv, sig, when)))
    for name, sig in (("SIGINT", signal.SIGINT), ("SIGKILL", signal.SIGKILL)):
        add(Case(f"{name} during sweep, rerun", "faults", [], "special", pure=False,
                 special=interrupted(conc, sig, "part", sweep=True)))  # fmt: skip
    add(Case("dead writers' leftovers removed", "faults", [], "special", pure=False,
             special=planted_leftovers))  # fmt: skip
    for free, verb in ((48, "scan"), (0, "scan"), (48, "sweep")):
        add(Case(f"full disk ({free}k free): {verb}", "faults", [], "special", pure=False,
                 special=full_disk(free, verb)))  # fmt: skip
    return c


# --- running -------------------------------------------------------------------------------


def run_case(case: Case, env: Env) -> dict:
    env.data = env.root / "data" / re.sub(r"[^A-Za-z0-9._-]+", "_", case.name)
    before = snapshot(env.root)
    if case.special:
        r = case.special(env)
    else:
        r = headlab(env, [env.sub(a) for a in case.argv], case.timeout)
    changes = written(before, snapshot(env.root), env)
    verdict, reason = classify(case, r, changes, env)
    return {
        "name": case.name, "klass": case.klass, "class": verdict, "reason": reason,
        "argv": [env.sub(a) for a in case.argv], "rc": r.rc, "seconds": round(r.seconds, 1),
        "last_line": last_line(r.err), "stderr_tail": lines(r.err)[-8:], "written": changes[:10],
        "note": r.info.get("note", ""),
    }  # fmt: skip


def table(records: list[dict]) -> str:
    counts = Counter((r["klass"], r["class"]) for r in records)
    klasses = sorted({r["klass"] for r in records}, key=[r["klass"] for r in records].index)
    head = f"{'class':<12}" + "".join(f"{c:>10}" for c in CLASSES) + f"{'total':>8}"
    rows = [head]
    for k in [*klasses, "TOTAL"]:
        row = [sum(v for (kk, c), v in counts.items() if c == cls and k in (kk, "TOTAL"))
               for cls in CLASSES]  # fmt: skip
        rows.append(f"{k:<12}" + "".join(f"{n:>10}" for n in row) + f"{sum(row):>8}")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every case's record here")
    parser.add_argument("--only", default="", help="run the cases whose name has this substring")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    chosen = [case for case in cases() if args.only.lower() in case.name.lower()]
    root = Path(tempfile.mkdtemp(prefix="headlab-bad-inputs-"))
    environ = {**os.environ, "HEADLAB_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    env = Env(root, root / "fx", root / "store", root / "cwd", environ)
    records: list[dict] = []
    try:
        for directory in (env.fx, env.cwd):
            directory.mkdir()
        sys.path.insert(0, str(ROOT))
        prompt_files(env.fx)
        plan_files(env.fx)
        model_dirs(env.fx)
        stored_runs(env)
        print(f"{len(chosen)} cases; fixtures in {root}", flush=True)
        for case in chosen:
            record = run_case(case, env)
            records.append(record)
            shown = record["last_line"] or record["reason"]
            line = f"{record['class']:<9} {case.name:<44} rc={record['rc']} {shown}"
            print(line[:160], flush=True)
    except KeyboardInterrupt:
        print("interrupted; reporting the cases run so far", file=sys.stderr)
    finally:
        for mount in env.mounts:
            subprocess.run(["umount", str(mount)], check=False)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    totals = table(records)
    print("\n" + totals)
    if args.json:
        args.json.write_text(json.dumps({"cases": records, "table": totals}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
