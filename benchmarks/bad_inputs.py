"""Bad inputs and faults: each must end in one `headlab: error: ...` line, exit 2, nothing written.

    .venv/bin/python benchmarks/bad_inputs.py --json bad_inputs.json [--only SUBSTRING]

Fixtures (prompt files, plans, model directories, stored runs) are built in a temporary
directory; every case is a subprocess of `.venv/bin/headlab`, on `tiny-random`. A case is
"clear" (exit 2; stderr's last line `headlab...error...`, no other line but argparse's usage;
no traceback; nothing written), "vague" (clear, but the message names none of what it should),
"traceback", "silent" (exit 0 where an error was expected) or "other". Cases with their own
predicate (a success expected, signals, concurrency, a full disk) are "pass" or "fail".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
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


# --- fixtures: one function per kind -------------------------------------------------------


def prompt_files(fx: Path) -> None:
    d = fx / "prompts"
    d.mkdir(parents=True)
    ok = '{"id": "a", "text": "the cat sat on the mat"}\n'
    for name, text in {
        "malformed3.jsonl": ok + '{"id": "b", "text": "x"}\n{"id": "c", "text": \n',
        "list.jsonl": '["the", "cat"]\n', "scalar.jsonl": '"just a string"\n',
        "notext.jsonl": '{"id": "a", "body": "x"}\n', "textnum.jsonl": '{"id": "a", "text": 4}\n',
        "empty_text.jsonl": '{"id": "a", "text": ""}\n',
        "blank_text.jsonl": '{"id": "a", "text": "   \\n "}\n', "dup_ids.jsonl": ok + ok,
        "dup_ids_types.jsonl": '{"id": 5, "text": "a b"}\n{"id": "5", "text": "c d"}\n',
        "id_object.jsonl": '{"id": {"x": 1}, "text": "a b"}\n',
        "surrogate.jsonl": '{"id": "a", "text": "bad \\ud800 here"}\n',
        "trailing.jsonl": '{"id": "a", "text": "a b"} trailing\n', "empty.jsonl": "",
        "blank_lines.jsonl": "\n\n   \n",
        "toolong.jsonl": json.dumps({"id": "toolong", "text": "the cat " * 1500}) + "\n",
        "huge20mb.jsonl": json.dumps({"id": "huge", "text": "cat " * 5_000_000}) + "\n",
        "big.jsonl": "".join(json.dumps({"id": str(i), "text": "the cat sat on a mat " * 70})
                             + "\n" for i in range(64)),  # ~7 s of scanning: the signal cases
    }.items():  # fmt: skip
        (d / name).write_text(text, encoding="utf-8")
    (d / "binary.jsonl").write_bytes(os.urandom(8192))
    (d / "latin1.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    (d / "adir").mkdir()
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    (d / "dangling.jsonl").symlink_to(d / "nowhere.jsonl")


def plan(
    top: str = "",
    body: str = '[single_head]\nmodes = ["zero"]\n',
    tasks: str = "[tasks.lm]\nn_prompts = 2\n",
    model: str = '"tiny-random"',
) -> str:
    return f'model = {model}\nname = "p"\n{top}\n{tasks}\n{body}'


def top_k(extra: str = "k = [1]", metric: str = "alpha") -> str:
    return f'[[top_k]]\nmetric = "{metric}"\nprobe = "sink"\nposition = 0\n{extra}\n'


def strength(kind: str = "scale", values: str = "[0.5]", heads: str = "[[0, 0]]") -> str:
    return f'[[strength]]\nkind = "{kind}"\nvalues = {values}\nheads = {heads}\n'


SINGLE = '[single_head]\nmodes = ["zero"]\n'
PLANS = {  # name: TOML text; the plans marked * rank heads by run `base` of the store
    "invalid_toml": 'model = "tiny-random"\n[single_head\nmodes = ["zero"]\n',
    "unknown_key": plan(top='colour = "red"'),
    "unknown_single_key": plan(body=SINGLE + "layer = [0]\n"),
    "single_head_string": plan(top='single_head = "zero"', body=""),
    "layer99": plan(body=SINGLE + "layers = [99]\n"),
    "layer_negative": plan(body=SINGLE + "layers = [-1]\n"),
    "layers_str": plan(body=SINGLE + 'layers = ["a"]\n'),
    "*k_too_big": plan(body=top_k("k = [100]")), "*k_zero": plan(body=top_k("k = [0]")),
    "k_missing": plan(body=top_k("")), "k_string": plan(body=top_k('k = "many"')),
    "*topk_metric_unknown": plan(body=top_k(metric="nosuch")),
    "*topk_mode_unknown": plan(body=top_k('k = [1]\nmode = "bogus"')),
    "topk_no_metrics_run": plan(body=top_k()),
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
    "*strength_both": plan(body=strength() + 'top = { metric = "alpha", k = 1 }\n'),
    "batch_zero": plan(top="batch_size = 0"), "batch_string": plan(top='batch_size = "x"'),
    "copies_zero": plan(top="copies = 0"), "copies_negative": plan(top="copies = -1"),
    "model_unknown": plan(model='"nosuch-model"'), "model_int": plan(model="5"),
    "name_traversal": plan().replace('"p"', '"../../escaped"'),
    "name_slash": plan().replace('"p"', '"a/b"'), "name_empty": plan().replace('"p"', '""'),
    "attribution_unknown": plan(top='attribution = ["bogus"]'),
    "attribution_niah": plan(top='attribution = ["zero"]', tasks="[tasks.niah]\n", body=""),
    "nothing_to_do": plan(body=""),
}  # fmt: skip
CONC_PLAN = (  # 16 units, ~5 s: long enough to interrupt
    'model = "tiny-random"\nname = "conc"\ncopies = 1\nbatch_size = 4\n'
    '[tasks.lm]\nn_prompts = 16\n[single_head]\nmodes = ["zero", "uniform"]\n'
)


def plan_files(fx: Path) -> None:
    d = fx / "plans"
    d.mkdir()
    for name, text in {**PLANS, "conc": CONC_PLAN}.items():
        (d / f"{name.lstrip('*')}.toml").write_text(text)
    (d / "binary.toml").write_bytes(os.urandom(2048))
    (d / "adir.toml").mkdir()


def model_dirs(fx: Path) -> None:
    from probes.models.tiny import tiny_llama

    d, model, tokenizer = fx / "models", *tiny_llama()
    model.save_pretrained(d / "real")
    tokenizer.save_pretrained(d / "real")
    weights = (d / "real" / "model.safetensors").read_bytes()
    config = json.loads((d / "real" / "config.json").read_text())

    def variant(name: str, drop: tuple[str, ...] = (), **files: bytes) -> None:
        shutil.copytree(d / "real", d / name)
        for gone in drop:
            (d / name / gone).unlink(missing_ok=True)
        for file, data in files.items():
            (d / name / file.replace("__", ".")).write_bytes(data)

    (d / "empty").mkdir()
    variant("random_weights", model__safetensors=os.urandom(len(weights)))
    variant("truncated_weights", model__safetensors=weights[: len(weights) // 2])
    variant("bad_config", config__json=b"{not json")
    variant("no_weights", drop=("model.safetensors",))
    variant("pickle_only", drop=("model.safetensors",), pytorch_model__bin=os.urandom(4096))
    variant("unknown_type", config__json=json.dumps({**config, "model_type": "nosuch"}).encode())
    variant("wrong_shape", config__json=json.dumps({**config, "hidden_size": 64}).encode())
    variant("no_tokenizer", drop=("tokenizer.json", "tokenizer_config.json"))
    (d / "afile").write_text("not a model\n")


def write_parquet(path: Path, metadata: dict | None = None, table=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1, 2], "b": ["x", "y"]}) if table is None else table
    pq.write_table(table.replace_schema_metadata(metadata), path)


def stored_runs(env: Env) -> None:
    """Good tiny runs `base` (sink) and `rbase` (retrieval) in `store`, and broken copies."""
    import pyarrow.parquet as pq

    for run_id, probes in (("base", ["sink,attention_stats"]), ("rbase", [
            "retrieval", "--param", "retrieval.lengths=128", "--param", "retrieval.depths=0,50",
            "--param", "retrieval.max_new_tokens=8"])):  # fmt: skip
        made = headlab(env, ["scan", *TINY, "--quiet", "--data", str(env.store), "--run-id",
                             run_id, "--probes", *probes])  # fmt: skip
        assert made.rc == 0, made.err
    runs, outside, res = env.store / "runs", env.root / "outside", "results.parquet"
    shutil.copytree(runs / "base", outside / "base")

    def copy(name: str, source: str = "base") -> Path:
        shutil.copytree(runs / source, runs / name)
        return runs / name

    data = (runs / "base" / res).read_bytes()
    (copy("truncated") / res).write_bytes(data[: len(data) // 2])
    rdata = (runs / "rbase" / res).read_bytes()
    (copy("rtruncated", "rbase") / res).write_bytes(rdata[: len(rdata) // 2])
    (copy("garbage") / res).write_bytes(os.urandom(len(data)))
    (copy("no_manifest") / "manifest.json").unlink()
    (copy("bad_manifest") / "manifest.json").write_text("{oops")
    (copy("list_manifest") / "manifest.json").write_text("[1, 2]")
    write_parquet(copy("foreign") / res)
    write_parquet(
        copy("schema_v1") / res, {b"headlab.schema": b"1"}, pq.read_table(runs / "base" / res)
    )
    (copy("no_tables") / res).unlink()
    write_parquet(copy("foreign_sweep") / "sweep-x.parquet")
    (copy("results_link") / res).unlink()
    (runs / "results_link" / res).symlink_to(outside / "base" / res)
    (copy("manifest_link") / "manifest.json").unlink()
    (runs / "manifest_link" / "manifest.json").symlink_to(outside / "base" / "manifest.json")
    (runs / "dir_link").symlink_to(outside / "base")
    for name in ("foreign_part", "garbage_part"):  # an unfinished sweep with a bad part
        (copy(name) / "sweep-conc.parts").mkdir()
        part = runs / name / "sweep-conc.parts" / "part-0000.parquet"
        if name == "foreign_part":
            write_parquet(part)
        else:
            part.write_bytes(os.urandom(4096))
    (env.root / "afile").write_text("a file where a directory is expected\n")
    (env.root / "runs_file").mkdir()
    (env.root / "runs_file" / "runs").write_text("not a directory\n")  # fmt: skip


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


# --- special cases: signals, concurrency, full disk, latest ---------------------------------


def sweep_table(data: Path):
    paths = sorted((data / "runs").glob("*/sweep-conc.parquet"))
    return read_table(paths[0]) if paths else None


def leftovers(data: Path) -> list[str]:
    return [str(p) for p in (data / "runs").rglob("*") if STAGING.match(p.name)]


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
            "part": lambda: len(list(runs.glob("*/sweep-*.parts/part-*.parquet"))) >= 2,
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


# --- the cases -----------------------------------------------------------------------------

PREFIX = {  # the first word of a table's command: what it stands for
    "scan": ["scan", *TINY, "--quiet", "--probes", "sink", "--data", "{data}"],
    "sweep": ["sweep", "--quiet", "--data", "{data}", *TINY],
    "sweepf": ["sweep", "--quiet", "--data", "{data}", *TINY, "--tasks", "lm",
               "--single-head", "zero"],
    "ssweep": ["sweep", "--quiet", "--data", "{store}", *TINY, "--tasks", "lm",
               "--metrics-run", "base"],
    "tsweep": ["sweep", "--quiet", "--data", "{store}", *TINY, "--tasks", "lm",
               "--metrics-run", "base", "--top-metric", "alpha", "--top-position", "0"],
    "plan": ["sweep", "--quiet", "--data", "{data}", "--plan"],
    "resume": ["sweep", "--quiet", "--data", "{store}", "--plan", "{fx}/plans/conc.toml", "--run"],
    "show": ["show", "--data", "{store}"], "runs": ["runs"], "dashboard": ["dashboard"],
    "mask": ["mask-retrieval", "--quiet", "--data", "{store}"], "prepare": ["prepare"],
    "ind": ["induction-check", *TINY, "--seeds", "1", "--n-sequences", "2"],
    "bench": ["bench", *TINY, "--tokens", "64", "--repeats", "1", "--methods", "plain",
              "--data", "{data}"],
}  # fmt: skip
# [class], then: case name | command (shlex; later flags override the prefix's) | names | options
TABLE = """
[flags]
scan batch-size 0             | scan --batch-size 0                  | --batch-size
scan batch-size x             | scan --batch-size x                  | --batch-size
scan max-tokens 1             | scan --max-tokens 1                  | --max-tokens
scan max-tokens abc           | scan --max-tokens abc                | --max-tokens
scan device gpu0              | scan --device gpu0                   | gpu0
scan device cuda (no GPU)     | scan --device cuda                   | cuda
scan device mps               | scan --device mps                    | mps
scan path fast + divergence   | scan --path fast --probes divergence | divergence
scan path slow                | scan --path slow                     | --path
scan param without a dot      | scan --param sinkepsilon0.2          | sinkepsilon0.2
scan param unknown name       | scan --param sink.nope=1             | nope
scan param epsilon -1         | scan --param sink.epsilon=-1         | sink.epsilon
scan param epsilon abc        | scan --param sink.epsilon=abc        | sink.epsilon
scan param epsilon nan        | scan --param sink.epsilon=nan        | sink.epsilon
scan param n_positions 1.5    | scan --param sink.n_positions=1.5    | n_positions
scan param lengths a,b        | scan --probes retrieval --param retrieval.lengths=a,b  | lengths
scan param lengths > context  | scan --probes retrieval --param retrieval.lengths=4096 | lengths=
scan param unselected probe   | scan --param retrieval.max_new_tokens=3 | retrieval
scan param unknown probe      | scan --param nosuch.x=1              | nosuch
scan probes unknown           | scan --probes nosuch                 | nosuch
scan probes empty             | scan --probes ''                     | --probes
scan probes twice             | scan --probes sink,sink              | sink      | either
scan model unknown name       | scan --model nosuch-model            | nosuch-model
scan model tiny-random-abc    | scan --model tiny-random-abc         | tiny-random-abc
scan model empty              | scan --model ''                      | model
scan model HF id not cached   | scan --model HuggingFaceTB/NoSuch-1M | NoSuch-1M | max=30
scan seed x                   | scan --seed x                        | --seed
scan seed 2**80               | scan --seed 1208925819614629174706176 | seed
scan run-id of an existing run | scan --data {store} --run-id base   | base
scan run-id ../escape         | scan --run-id ../escape              | ../escape
scan run-id .hidden           | scan --run-id .hidden                | .hidden
scan run-id empty             | scan --run-id ''                     | run id
scan run-id 'latest'          | scan --run-id latest                 | latest
scan data is a file           | scan --data {root}/afile             | afile
scan data/runs is a file      | scan --data {root}/runs_file         | runs_file
scan unknown flag             | scan --nope                          | --nope
no verb                       | ''
unknown verb                  | frobnicate                           | frobnicate
sweep batch-size 0            | sweepf --batch-size 0                | batch
sweep copies 0                | sweepf --copies 0                    | copies
sweep k x                     | sweepf --k x                         | --k
sweep tasks nosuch            | sweep --tasks nosuch --single-head zero | nosuch
sweep tasks empty             | sweep --tasks '' --single-head zero  | --tasks
sweep single-head bogus       | sweep --tasks lm --single-head bogus | bogus
sweep single-head empty       | sweep --tasks lm --single-head ''    | --single-head
sweep no plan at all          | sweep
sweep strength scale=abc      | sweep --tasks lm --strength scale=abc --strength-heads 0.0 | abc
sweep strength bogus kind     | sweep --tasks lm --strength bogus=1 --strength-heads 0.0   | kind
sweep strength head 9.9       | sweep --tasks lm --strength scale=1 --strength-heads 9.9   | L9H9
sweep strength heads 0.0.1    | sweep --tasks lm --strength scale=1 --strength-heads 0.0.1 | heads
sweep strength without heads  | sweep --tasks lm --strength scale=1                        | heads
sweep strength no values      | sweep --tasks lm --strength scale= --strength-heads 0.0    | values
sweep strength scale=-1       | sweep --tasks lm --strength scale=-1 --strength-heads 0.0  | scale
sweep strength keep=1.5   | sweep --tasks lm --strength redistribute=1.5 --strength-heads 0.0 | 1.5
sweep top-metric, no stored run | sweep --tasks lm --top-metric alpha    | --metrics-run
sweep top-metric nosuch       | ssweep --top-metric nosuch             | nosuch
sweep top-metric ambiguous    | ssweep --top-metric alpha              | position
sweep top k 0                 | tsweep --k 0   | k=0,--k
sweep top k 100               | tsweep --k 100 | k=100,--k
sweep top-position 999        | ssweep --top-metric alpha --top-position 999       | 999
sweep top-mode bogus          | tsweep --top-mode bogus | bogus
sweep metrics-run nosuch      | tsweep --metrics-run nosuch | nosuch
sweep metrics-run truncated   | tsweep --metrics-run truncated | truncated
sweep name ../../escaped      | sweepf --name ../../escaped          | escaped
sweep run ../escaped          | sweepf --run ../escaped              | escaped
sweep run of another model | sweepf --model tiny-random-3 --run base --data {store} | random-3
sweep run truncated           | sweepf --run truncated --data {store} | truncated
sweep run without manifest    | sweepf --run no_manifest --data {store} | no_manifest
sweep device gpu0             | sweepf --device gpu0                 | gpu0
sweep device cuda             | sweepf --device cuda                 | cuda
sweep attribution bogus       | sweep --tasks lm --attribution bogus | bogus
sweep attribution on niah     | sweep --tasks niah --attribution zero | niah
sweep model unknown           | sweepf --model nosuch-model          | nosuch-model
sweep data is a file          | sweepf --data {root}/afile           | afile
sweep plan + plan flags       | plan {fx}/plans/conc.toml --tasks lm | --plan
show top 0                    | show base --top 0                    | --top
show top -1                   | show base --top -1                   | --top
show top x                    | show base --top x                    | --top
show nosuch run               | show nosuch                          | nosuch
show run ../runs/base         | show ../runs/base                    | ../runs/base
show latest, no runs          | show latest --data {data}            | runs
runs data is a file           | runs --data {root}/afile             | afile
runs data/runs is a file      | runs --data {root}/runs_file         | runs_file
dashboard port 0              | dashboard --port 0                   | --port
mask-retrieval not retrieval  | mask base                            | base
mask-retrieval ks 0           | mask rbase --ks 0                    | --ks
mask-retrieval modes bogus    | mask rbase --modes bogus             | bogus
mask-retrieval depths 200     | mask rbase --depths 200              | --depths
mask-retrieval rows-per-batch 0 | mask rbase --rows-per-batch 0      | --rows-per-batch
mask-retrieval device gpu0    | mask rbase --device gpu0             | gpu0
prepare unknown model         | prepare nosuch-model                 | nosuch-model
prepare tiny-random           | prepare tiny-random                  | tiny-random
induction-check top-k 0       | ind --top-k 0                        | --top-k
induction-check top-k 9 (8 heads) | ind --top-k 9                    | 9
induction-check n-sequences 0 | ind --n-sequences 0                  | --n-sequences
induction-check half-len 0    | ind --half-len 0                     | --half-len
induction-check half-len 200 (> context) | ind --half-len 200        | half
induction-check seeds empty   | ind --seeds ''                       | --seeds
induction-check batch-size 0  | ind --batch-size 0                   | --batch-size
induction-check model nosuch  | ind --model nosuch-model             | nosuch-model
bench tokens 0                | bench --tokens 0                     | --tokens
bench repeats 0               | bench --repeats 0                    | --repeats
bench methods bogus           | bench --methods bogus                | bogus
bench timeout-s 0             | bench --timeout-s 0                  | --timeout-s
bench tokens 4096 (> context) | bench --tokens 4096                  | 4096      | t=300
bench data is a file          | bench --data {root}/afile            | afile     | t=300
[prompts]
prompts malformed JSON on line 3 | scan --prompts {P}malformed3.jsonl | malformed3.jsonl:3
prompts a list, not an object | scan --prompts {P}list.jsonl         | list.jsonl:1
prompts a JSON string line    | scan --prompts {P}scalar.jsonl       | scalar.jsonl:1
prompts missing text          | scan --prompts {P}notext.jsonl       | notext.jsonl:1
prompts text is a number      | scan --prompts {P}textnum.jsonl      | textnum.jsonl:1
prompts empty text            | scan --prompts {P}empty_text.jsonl   | empty_text.jsonl:1
prompts whitespace text       | scan --prompts {P}blank_text.jsonl   | blank_text.jsonl:1
prompts duplicate ids         | scan --prompts {P}dup_ids.jsonl      | 'a'
prompts ids 5 and '5'         | scan --prompts {P}dup_ids_types.jsonl | '5'
prompts id is an object       | scan --prompts {P}id_object.jsonl    | id_object.jsonl:1
prompts lone surrogate        | scan --prompts {P}surrogate.jsonl    | surrogate.jsonl:1
prompts trailing garbage      | scan --prompts {P}trailing.jsonl     | trailing.jsonl:1
prompts empty file            | scan --prompts {P}empty.jsonl        | empty.jsonl
prompts only blank lines      | scan --prompts {P}blank_lines.jsonl  | blank_lines.jsonl
prompts binary file           | scan --prompts {P}binary.jsonl       | binary.jsonl
prompts latin-1 bytes         | scan --prompts {P}latin1.jsonl       | latin1.jsonl:1
prompts a directory           | scan --prompts {P}adir               | adir
prompts missing file          | scan --prompts {P}nosuch.jsonl       | nosuch.jsonl
prompts symlink loop          | scan --prompts {P}loop.jsonl         | loop.jsonl
prompts dangling symlink      | scan --prompts {P}dangling.jsonl     | dangling.jsonl
prompts /dev/zero             | scan --prompts /dev/zero             | /dev/zero | t=60
prompts empty path            | scan --prompts ''                    | --prompts
prompts longer than context   | scan --prompts {P}toolong.jsonl --max-tokens none | toolong
prompts 20 MB, no truncation  | scan --prompts {P}huge20mb.jsonl --max-tokens none | huge
prompts 20 MB, truncated      | scan --prompts {P}huge20mb.jsonl     | huge      | either t=300
[models]
model dir empty               | scan --model {M}empty                | empty
model dir random weights      | scan --model {M}random_weights       | random_weights
model dir truncated weights   | scan --model {M}truncated_weights    | truncated_weights
model dir config not JSON     | scan --model {M}bad_config           | bad_config
model dir without weights     | scan --model {M}no_weights           | no_weights
model dir pickle weights only | scan --model {M}pickle_only          | pickle_only
model dir unknown model_type  | scan --model {M}unknown_type         | unknown_type
model dir wrong shapes        | scan --model {M}wrong_shape          | wrong_shape
model dir without tokenizer   | scan --model {M}no_tokenizer         | no_tokenizer
model dir is a file           | scan --model {M}afile                | afile
model dir real (control)      | scan --model {M}real                 |           | either
induction-check random weights | ind --model {M}random_weights       | random_weights
sweep random weights          | sweepf --model {M}random_weights     | random_weights
[runs]
show truncated results        | show truncated                       | truncated
show random-bytes results     | show garbage                         | garbage
show without manifest         | show no_manifest                     | no_manifest
show manifest not JSON        | show bad_manifest                    | bad_manifest
show manifest a JSON list     | show list_manifest                   | list_manifest
show foreign parquet          | show foreign                         | foreign
show schema v1                | show schema_v1                       | version 1
show no results tables        | show no_tables                       | no_tables
show foreign sweep table      | show foreign_sweep                   | sweep-x.parquet
show results symlinked out    | show results_link                    | results_link
show manifest symlinked out   | show manifest_link                   | manifest_link
show run symlinked out        | show dir_link                        | dir_link
mask-retrieval truncated      | mask rtruncated                      | rtruncated
mask-retrieval no manifest    | mask no_manifest                     | no_manifest
mask-retrieval bad manifest   | mask bad_manifest                    | bad_manifest
mask-retrieval symlinked run  | mask dir_link                        | dir_link
sweep resume, foreign part    | resume foreign_part                  | part-0000 | impure
sweep resume, garbage part    | resume garbage_part                  | part-0000 | impure
"""


def table_cases() -> list[Case]:
    found, klass = [], ""
    for row in filter(str.strip, TABLE.splitlines()):
        if row.startswith("["):
            klass = row.strip("[]")
            continue
        name, command, names, options = [*(c.strip() for c in row.split(" | ")), "", "", ""][:4]
        words = shlex.split(command) if command != "''" else []
        if words and words[0] in PREFIX:
            words = PREFIX[words[0]] + words[1:]
        opts = dict(o.partition("=")[::2] for o in options.split())
        found.append(Case(name, klass, words, "either" if "either" in opts else "error",
                          tuple(filter(None, names.split(","))), "impure" not in opts,
                          float(opts.get("t", 120)), float(opts["max"]) if "max" in opts else None,
                          check=no_doubled_rows if "either" in opts else None))  # fmt: skip
    return found


def cases() -> list[Case]:
    c = table_cases()
    for name in PLANS:
        stored = ["--metrics-run", "base", "--data", "{store}"] * name.startswith("*")
        name = name.lstrip("*")
        names = (f"{name}.toml", "plan 'p'", "[single_head]", "top_k", "[[strength]]")
        argv = [*PREFIX["plan"], f"{{fx}}/plans/{name}.toml", *stored]
        c.append(Case(f"plan {name}", "plans", argv, names=names))
    for name in ("binary.toml", "adir.toml", "nosuch.toml"):
        c.append(Case(f"plan file {name}", "plans", ["sweep", "--data", "{data}", "--plan",
                      "{fx}/plans/" + name], names=(name,)))  # fmt: skip
    special = [
        ("runs", "runs lists broken runs as unreadable", listing),
        ("runs", "show latest = newest by time, not by name", latest),
        ("concurrency", "two sweeps, same plan, at once",
         concurrent([*PREFIX["plan"], "{fx}/plans/conc.toml"], True)),
        ("concurrency", "two scans, same run id, at once",
         concurrent([*PREFIX["scan"], "--run-id", "same"], False)),
        ("faults", "dead writers' leftovers removed", planted_leftovers),
    ]  # fmt: skip
    big = ["scan", *TINY, "--prompts", "{P}big.jsonl", "--data", "{data}", "--run-id", "k1"]
    conc = [*PREFIX["plan"], "{fx}/plans/conc.toml"]
    for name, argv, sig, when, sweep in [
        ("SIGINT at startup (0.3 s)", PREFIX["scan"], signal.SIGINT, "0.3", False),
        ("SIGINT during model load (2.5 s)", PREFIX["scan"], signal.SIGINT, "2.5", False),
        ("SIGINT during scan", big, signal.SIGINT, "progress", False),
        ("SIGKILL during scan's write, rerun", [*big, "--quiet"], signal.SIGKILL, "staging", False),
        ("SIGKILL during scan, rerun", big, signal.SIGKILL, "progress", False),
        ("SIGINT during sweep, rerun", conc, signal.SIGINT, "part", True),
        ("SIGKILL during sweep, rerun", conc, signal.SIGKILL, "part", True),
    ]:
        special.append(("faults", name, interrupted(argv, sig, when, sweep)))
    for free, verb in ((48, "scan"), (0, "scan"), (48, "sweep")):
        special.append(("faults", f"full disk ({free}k free): {verb}", full_disk(free, verb)))
    c += [Case(name, klass, [], "special", pure=False, special=run) for klass, name, run in special]
    return c


# --- running -------------------------------------------------------------------------------


def run_case(case: Case, env: Env) -> dict:
    env.data = env.root / "data" / re.sub(r"[^A-Za-z0-9._-]+", "_", case.name)
    before, argv = snapshot(env.root), [env.sub(a) for a in case.argv]
    r = case.special(env) if case.special else headlab(env, argv, case.timeout)
    changes = written(before, snapshot(env.root), env)
    verdict, reason = classify(case, r, changes, env)
    return {"name": case.name, "klass": case.klass, "class": verdict, "reason": reason,
            "argv": argv, "rc": r.rc, "seconds": round(r.seconds, 1), "note": r.note,
            "last_line": last_line(r.err), "stderr_tail": lines(r.err)[-6:],
            "written": changes[:8]}  # fmt: skip


def totals(records: list[dict]) -> str:
    counts = Counter((r["klass"], r["class"]) for r in records)
    klasses = list(dict.fromkeys(r["klass"] for r in records))
    out = [f"{'class':<12}" + "".join(f"{c:>10}" for c in CLASSES) + f"{'total':>8}"]
    for k in [*klasses, "TOTAL"]:
        row = [sum(n for (kk, c), n in counts.items() if c == cls and k in (kk, "TOTAL"))
               for cls in CLASSES]  # fmt: skip
        out.append(f"{k:<12}" + "".join(f"{n:>10}" for n in row) + f"{sum(row):>8}")
    return "\n".join(out)


def git_commit() -> str:
    """HEAD, and whether the work tree differs from it (read-only git)."""
    run = [
        ["git", "-C", str(ROOT), *a]
        for a in (
            ["rev-parse", "--short", "HEAD"],
            ["status", "--porcelain", "--", ".", ":!benchmarks"],
        )
    ]
    head, dirty = (subprocess.run(c, capture_output=True, text=True).stdout.strip() for c in run)
    return head + ("+changes" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every case's record and the table here")
    parser.add_argument("--only", action="append", default=[], help="run only the cases whose "
                        "name has this substring (repeatable)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    only = [o.lower() for o in args.only] or [""]
    chosen = [case for case in cases() if any(o in case.name.lower() for o in only)]
    root = Path(tempfile.mkdtemp(prefix="headlab-bad-inputs-"))
    env = Env(root, {**os.environ, "HEADLAB_CACHE": str(root / "cache")})
    records: list[dict] = []
    commit = git_commit()
    try:
        env.cwd.mkdir()
        sys.path.insert(0, str(ROOT))
        prompt_files(env.fx)
        plan_files(env.fx)
        model_dirs(env.fx)
        stored_runs(env)
        print(f"{len(chosen)} cases; fixtures in {root}", flush=True)
        for case in chosen:
            records.append(record := run_case(case, env))
            line = f"{record['class']:<9} {case.name:<40} rc={record['rc']} {record['last_line']}"
            why = (
                f"  [{record['reason'][:200]}]" if record["class"] not in ("clear", "pass") else ""
            )
            print(line[:160] + why, flush=True)
    except KeyboardInterrupt:
        print("interrupted; the cases run so far:", file=sys.stderr)
    finally:
        for mount in env.mounts:
            subprocess.run(["umount", str(mount)], check=False)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    table, tree = totals(records), (commit, git_commit())  # the code may change while we run
    print(f"\n{table}\nheadlab at {tree[0]} (start), {tree[1]} (end)")
    if args.json:
        args.json.write_text(json.dumps({"cases": records, "totals": table, "tree": tree}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
