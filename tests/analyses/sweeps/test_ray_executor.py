"""The Ray executor: the same table as the local one, bit for bit; a killed worker or driver
loses and doubles nothing; bad executor options are one-line errors before any model loads.

The tests marked `ray` start a local Ray cluster with 2 CPUs (about 10 s each on 2 cores)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from analyses.cli.main import main
from analyses.results import store
from analyses.sweeps import runner as sweep
from analyses.sweeps.plan_file import load_plan, plan_from_dict

REPO = Path(__file__).resolve().parents[3]
KEYS = ["probe", "metric", "condition", "layer", "head"]
FAULT_PLAN = """model = "tiny-random"
name = "faults"
batch_size = 1
copies = 1
attribution = ["zero"]
[tasks.lm]
n_prompts = 6
max_tokens = 48
[single_head]
modes = ["zero", "mean", "uniform"]
[[strength]]
kind = "scale"
values = [0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 2.0, 3.0]
heads = [[0, 1], [1, 2]]
"""
N_PARTS = 2 * 4 * 3 + 8 + 2  # single heads + strengths + clean + attribution, one part each


def exact(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Row for row and bit for bit, whatever order the parts came back in."""
    assert not got.duplicated(KEYS).any()
    got, want = (t.sort_values(KEYS, ignore_index=True) for t in (got, want))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.ray
def test_ray_executor_gives_the_local_table_bit_for_bit(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"id": pid, "text": text, "correct": good, "incorrect": bad})
            for pid, text, good, bad in [
                ("a", "red the cat went to the park", "red", "blue"),
                ("b", "blue a dog went to the house of", "blue", "green"),
                ("c", "green and the ball", "green", "red"),
            ]
        )
    )
    plan = plan_from_dict(
        {
            "model": "tiny-random",
            "tasks": {"lm": {"n_prompts": 3, "max_tokens": 24}, "ioi": {"path": str(pairs)}},
            "single_head": {"modes": ["zero", "mean", "uniform"]},
            "strength": [{"kind": "softpag", "values": [0.25, 0.5], "heads": [[0, 1], [1, 3]]}],
            "attribution": ["zero", "mean"],
            "batch_size": 2,
            "copies": 3,  # chunks of 3, 1 and 2 units: several parts per layer
        }
    )
    # One torch thread in this process, as in each actor (--cpus-per-worker 1): float sums may
    # depend on the thread count (test_..._on_smollm2).
    local = sweep.run(sweep.SweepConfig(plan, tmp_path / "local", progress=False, threads=1))
    config = sweep.SweepConfig(plan, tmp_path / "ray", progress=False, executor="ray", workers=2)
    distributed = sweep.run(config)
    exact(store.read_table(distributed), store.read_table(local))
    record = store.read_manifest(tmp_path / "ray", distributed.parent.name)["sweeps"]["sweep"]
    session = record["last_session"]
    assert session["executor"] == "ray" and session["workers"] == 2
    assert len(session["worker_processes"]) == 2  # both actors computed parts
    assert session["torch_threads"] == [1]
    assert record["prefix_reuse"] == {"lm": True, "ioi": True}
    assert (
        sweep.SweepConfig.from_manifest(
            store.read_manifest(tmp_path / "ray", distributed.parent.name), "sweep"
        )
        == config
    )


@pytest.mark.ray
def test_an_error_inside_a_worker_is_one_line_and_leaves_nothing(tmp_path, capsys):
    # The built-in IOI names share a first token on the tiny word-level tokenizer: the task
    # refuses in the actor, while it prepares; the driver shows headlab's message, not Ray's.
    argv = ["sweep", "--model", "tiny-random", "--tasks", "ioi", "--single-head", "zero",
            "--data", str(tmp_path / "data"), "--quiet", "--executor", "ray",
            "--workers", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs answers whose first tokens differ" in err, err
    assert "Traceback" not in err and "RayTaskError" not in err
    assert not (tmp_path / "data").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_equals_local_bit_for_bit_on_smollm2_with_equal_threads(tmp_path):
    plan = plan_from_dict(
        {
            "model": "smollm2-135m",
            "tasks": {"ioi": {"n_prompts": 4}},
            "single_head": {"modes": ["zero", "mean"], "layers": [3, 20]},
            "copies": 4,
        }
    )
    local = sweep.run(sweep.SweepConfig(plan, tmp_path / "local", progress=False, threads=1))
    ray_config = sweep.SweepConfig(plan, tmp_path / "ray", progress=False, executor="ray",
                                   workers=2, threads=1)  # fmt: skip
    exact(store.read_table(sweep.run(ray_config)), store.read_table(local))


# --- faults: a worker killed mid-item, the driver killed mid-run --------------------------------


@pytest.fixture(scope="module")
def fault_plan(tmp_path_factory):
    """The plan file and its table computed in one go, in this process, with one torch thread
    as in each actor."""
    directory = tmp_path_factory.mktemp("faults")
    plan = directory / "plan.toml"
    plan.write_text(FAULT_PLAN)
    config = sweep.SweepConfig(load_plan(plan), directory / "whole", progress=False, threads=1)
    return plan, store.read_table(sweep.run(config))


def ray_sweep(plan: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "analyses.cli", "sweep", "--plan", str(plan), "--data",
            str(data), "--quiet", "--executor", "ray", "--workers", "2"]  # fmt: skip


def start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def parts_of(data: Path) -> list[Path]:
    return list(data.glob("runs/*/sweep-faults.parts/part-*.parquet"))


def wait_for(condition, process: subprocess.Popen, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if found := condition():
            return found
        time.sleep(0.005)
    return None


def busy_workers(driver: subprocess.Popen) -> list[psutil.Process]:
    """The driver's Ray actors that are computing an item now (Ray titles them so)."""
    found = []
    for child in psutil.Process(driver.pid).children(recursive=True):
        try:
            if child.cmdline()[:1] == ["ray::RayWorker.compute"]:
                found.append(child)
        except psutil.Error:
            pass
    return found


def stop_leftovers(processes: list[psutil.Process]) -> None:
    """Stop what a SIGKILLed driver's cluster left (its agents exit on their own, slowly)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=30)


@pytest.mark.ray
def test_a_worker_killed_mid_item_is_restarted_and_the_item_retried(fault_plan, tmp_path):
    plan, want = fault_plan
    data = tmp_path / "data"
    driver = start(ray_sweep(plan, data))
    victims = wait_for(lambda: len(parts_of(data)) >= 2 and busy_workers(driver), driver)
    assert victims, "the sweep finished (or failed) before a worker could be killed"
    victim = victims[0]
    victim.send_signal(signal.SIGKILL)
    n_before = len(parts_of(data))
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert n_before < N_PARTS
    (table,) = data.glob("runs/*/sweep-faults.parquet")
    exact(store.read_table(table), want)  # 0 rows lost, 0 doubled, the same values
    session = store.read_manifest(data, table.parent.name)["sweeps"]["faults"]["last_session"]
    assert session["units"] == 32
    pids = {int(name.rsplit(":", 1)[1]) for name in session["worker_processes"]}
    assert len(pids - {victim.pid}) == 2  # the other actor and the victim's restarted self


@pytest.mark.ray
def test_a_killed_driver_resumes_from_its_parts(fault_plan, tmp_path):
    plan, want = fault_plan
    data = tmp_path / "data"
    driver = start(ray_sweep(plan, data))
    assert wait_for(lambda: len(parts_of(data)) >= 4, driver), "finished before the kill"
    cluster = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    assert driver.returncode == -signal.SIGKILL
    stop_leftovers(cluster)
    (parts,) = {path.parent for path in parts_of(data)}
    finished = sweep.done_units(parts)
    assert 0 < len(finished) < N_PARTS
    assert not list(data.glob("runs/*/sweep-faults.parquet"))

    again = start(ray_sweep(plan, data))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    table = parts.parent / "sweep-faults.parquet"
    exact(store.read_table(table), want)
    assert not parts.exists()
    session = store.read_manifest(data, parts.parent.name)["sweeps"]["faults"]["last_session"]
    plan_units_before = [u for u in finished if not u.endswith(("|clean", ":zero"))]
    assert session["units"] == 32 - len(plan_units_before)


# --- options, checked before anything starts -----------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
        (["--executor", "ray", "--workers", "0"], "--workers must be a whole number ≥ 1, got 0"),
        (["--workers", "2"], "--workers applies to the ray executor only"),
        (["--address", "auto"], "--address applies to the ray executor only"),
        (["--executor", "ray", "--address", "headnode"], "--address must be auto or HOST:PORT"),
        (["--executor", "ray", "--address", "127.0.0.1:1"],
         "--address 127.0.0.1:1: no Ray cluster answers there"),
        (["--executor", "ray", "--cpus-per-worker", "0"], "--cpus-per-worker must be more than 0"),
        (["--threads", "0"], "--threads must be a whole number ≥ 1, got 0"),
        (["--executor", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be a number"),
        (["--executor", "ray", "--gpus-per-worker", "1"], "use it with --device cuda"),
        (["--executor", "ray", "--device", "cuda"], "needs --gpus-per-worker > 0"),
    ],
)  # fmt: skip
def test_bad_executor_options_are_one_line_errors_that_leave_nothing(
    flags, message, tmp_path, capsys
):
    data = tmp_path / "data"
    argv = ["sweep", "--model", "tiny-random", "--tasks", "lm", "--single-head", "zero",
            "--data", str(data), "--quiet", *flags]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as usage:  # argparse's own errors (one line too: OneLineParser)
        code = usage.code
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not data.exists()


def test_a_closed_port_is_refused_before_ray_tries_for_minutes(tmp_path):
    started = time.monotonic()
    config = sweep.SweepConfig(plan_from_dict({"model": "tiny-random", "tasks": {"lm": {}},
                                               "single_head": {}}),
                               tmp_path, executor="ray", address="127.0.0.1:1")  # fmt: skip
    with pytest.raises(sweep.executors.ExecutorError, match=r"--address 127\.0\.0\.1:1"):
        sweep.run(config)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()


def test_a_model_object_is_refused_for_ray_workers(tiny_model, tmp_path):
    plan = plan_from_dict({"model": "tiny-random", "tasks": {"lm": {}}, "single_head": {}})
    config = sweep.SweepConfig(plan, tmp_path, executor="ray")
    with pytest.raises(sweep.executors.ExecutorError, match="load the plan's model themselves"):
        sweep.run(config, model=tiny_model)
    assert not (tmp_path / "runs").exists()
