"""One writer per run, refused at once with the holder named; killed writers leave nothing."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from analyses.results import locks, store

REPO = Path(__file__).resolve().parents[3]


def test_a_second_writer_of_the_same_run_is_refused_naming_the_holder(tmp_path):
    runs = tmp_path / "runs"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from analyses.results import locks
                with locks.writing(Path({str(runs)!r}), "r1"):
                    Path({str(ready)!r}).write_text("1")
                    time.sleep(60)
                """
            ),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the holder never took the lock"
        refused = pytest.raises(locks.RunLockedError, match=rf"another process \(pid {holder.pid},")
        with refused, locks.writing(runs, "r1"):
            pass
        with locks.writing(runs, "r2"):  # another run is free
            pass
    finally:
        holder.kill()
        holder.wait()
    with locks.writing(runs, "r1"):  # a killed holder released its lock by dying
        pass


def test_leftovers_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".run.{dead_pid}.tmp-abc"
    stale_dir.mkdir()
    (stale_dir / "results.parquet").write_text("half")
    stale_file = tmp_path / f".part-1.parquet.{dead_pid}.tmp-xyz"
    stale_file.write_text("half")
    mine = tmp_path / f"{locks.temporary_prefix('run')}live"
    mine.mkdir()
    finished = tmp_path / "run"
    finished.mkdir()
    assert sorted(p.name for p in locks.remove_leftovers(tmp_path)) == sorted(
        [stale_dir.name, stale_file.name]
    )
    assert mine.exists() and finished.exists() and not stale_dir.exists()


def test_write_run_cleans_up_a_staging_directory_left_by_a_killed_write(tmp_path):
    table = pd.DataFrame([{"probe": "sink", "metric": "alpha", "layer": 0, "value": 1.0}])
    code = textwrap.dedent(
        f"""
        import os, pandas as pd
        from analyses.results import store
        def die(*args, **kwargs):
            os._exit(9)  # as SIGKILL would: no cleanup runs
        store.write_json = die
        table = pd.DataFrame({table.to_dict("list")!r}).assign(model="m")
        store.write_run({str(tmp_path)!r}, "a", table, {{}})
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    leftovers = [p.name for p in store.runs_root(tmp_path).iterdir() if p.name.startswith(".a.")]
    assert leftovers, "the killed write should have left its staging directory"
    store.write_run(tmp_path, "b", table.assign(model="m"), {"model": {}})
    names = sorted(p.name for p in store.runs_root(tmp_path).iterdir())
    assert names == ["b"] and store.list_runs(tmp_path)["run_id"].tolist() == ["b"]
    assert not (store.runs_root(tmp_path) / "a").exists()
    assert os.listdir(store.runs_root(tmp_path) / "b")
