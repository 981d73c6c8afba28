"""Bad inputs and faults: each must end in one `headlab: error: ...` line, exit 2, nothing written.

    .venv/bin/python -m benchmarks.bad_inputs --json bad_inputs.json [--only SUBSTRING]

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
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.bad_inputs.cases import cases
from benchmarks.bad_inputs.fixtures import model_dirs, plan_files, prompt_files, stored_runs
from benchmarks.bad_inputs.harness import (
    CLASSES,
    ROOT,
    Case,
    Env,
    classify,
    headlab,
    last_line,
    lines,
    snapshot,
    written,
)

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
