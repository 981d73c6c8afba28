"""Sharded, multi-model scans (analyses.jobs.scan_runs) on the local executor: the rows of
`--shards 3` equal the unsharded scan's bit for bit for every probe family; a killed scan
resumes with nothing lost or doubled; a rerun with other settings is refused; bad flags are
one-line errors that write nothing. The Ray executor's tests: test_scan_ray.py."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from analyses.cli.main import main
from analyses.jobs import scan, scan_parts, scan_runs
from analyses.results import store
from probes.core.schema import PATTERN_PROMPTS_TABLE
from probes.core.shards import Shard, shard_prompts

REPO = Path(__file__).resolve().parents[3]
# Every family; small settings so that the tiny model runs them in seconds. batch_size 3 splits
# divergence's (with, without) pairs across batches and so across shards.
PROBES = ("sink", "attention_stats", "future_attention", "pattern_class", "detectors",
          "divergence", "pattern", "retrieval")  # fmt: skip
PARAMS = {
    "pattern_class": {"min_length": 8, "last_queries": 8},
    "detectors": {"n_sequences": 5, "half_len": 6},
    "divergence": {"answer_tokens": 4},
    "pattern": {"n_prompts": 4, "max_blocks": 8},
    "retrieval": {"lengths": (60,), "depths": (0, 100), "max_new_tokens": 3},
}


def write_prompts(path: Path, n: int = 11, words: int = 6) -> Path:
    text = " ".join(f"word{i % 31} of the text" for i in range(200))
    lines = [json.dumps({"id": f"p{i}", "text": text[: 40 + words * 7 * i]}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, data: str, **fields) -> scan.ScanConfig:
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    fields = {"model": "tiny-random", "probes": PROBES, "probe_params": PARAMS, "prompts": prompts,
              "max_tokens": 40, "batch_size": 3, "data_dir": tmp_path / data, "progress": False,
              **fields}  # fmt: skip
    return scan.ScanConfig(**fields)


def stored(directory: Path) -> pd.DataFrame:
    table = store.load_run(directory.parent.parent, directory.name).drop(columns="run_id")
    return table.reset_index(drop=True)


def test_shards_cut_every_pass_into_contiguous_runs_that_cover_it_once():
    for n_batches in range(0, 12):
        for count in range(1, 6):
            runs = [Shard(index, count).batches(n_batches) for index in range(count)]
            assert [b for r in runs for b in r] == list(range(n_batches))
    assert [shard_prompts(11, 3, Shard(i, 3)) for i in range(3)] == [3, 3, 5]


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory):
    """Each tiny model scanned in one piece, in this process."""
    tmp_path = tmp_path_factory.mktemp("whole")
    found = {}
    for model in ("tiny-random", "tiny-random-1"):
        directory = scan_runs.run_one(config(tmp_path, "whole", model=model, run_id=model))
        found[model] = directory
    return found


def test_three_shards_of_two_models_equal_the_unsharded_scans_bit_for_bit(unsharded, tmp_path):
    configs = [config(tmp_path, "sharded", model=model, run_id=f"s-{model}", shards=3)
               for model in unsharded]  # fmt: skip
    directories = scan_runs.run(configs)
    assert [d.name for d in directories] == ["s-tiny-random", "s-tiny-random-1"]
    for directory, (model, whole) in zip(directories, unsharded.items(), strict=True):
        got, want = stored(directory), stored(whole)
        assert set(got["probe"]) == set(PROBES) and set(got["model"]) == {model}
        pd.testing.assert_frame_equal(got, want, check_exact=True)  # same rows, same order
        for name in (PATTERN_PROMPTS_TABLE, "niah_samples"):
            side = [
                store.read_side_table(d.parent.parent, d.name, name) for d in (directory, whole)
            ]
            pd.testing.assert_frame_equal(*side)
        shards = store.read_manifest(directory.parent.parent, directory.name)["shards"]
        assert shards["count"] == 3 and shards["parts"] == 4  # three shards and the decoding
    assert not (tmp_path / "sharded" / "runs" / scan_parts.PARTS_ROOT).exists()  # tidied away


def test_the_stored_rows_equal_the_in_memory_scan(unsharded, tiny_model, tmp_path):
    rows, _ = scan.table(config(tmp_path, "unused"), tiny_model)
    want = stored(unsharded["tiny-random"]).drop(columns="model")
    got = store.conform(rows.assign(run_id="")).drop(columns=["run_id", "model"])
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def scan_command(prompts: Path, data: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "analyses.cli", "scan", "--model", "tiny-random", "--data",
            str(data), "--prompts", str(prompts), "--max-tokens", "64", "--batch-size", "1",
            "--probes", "sink,attention_stats,future_attention", "--quiet", *flags]  # fmt: skip


def test_a_killed_scan_resumes_from_its_finished_shards(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=24, words=12)
    assert main(scan_command(prompts, tmp_path / "whole", "--run-id", "r")[3:]) == 0
    data = tmp_path / "data"
    command = scan_command(prompts, data, "--shards", "24")  # no --run-id: found again by rerun
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    parts = data / "runs" / scan_parts.PARTS_ROOT
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if len(list(parts.glob("*/part-*.pt"))) >= 3:
            break
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    assert driver.returncode == -signal.SIGKILL, "the scan ended before it could be killed"
    before = len(list(parts.glob("*/part-*.pt")))
    assert 3 <= before < 24 and store.run_ids(data) == []

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    (run_id,) = store.run_ids(data)
    got = stored(store.run_dir(data, run_id))
    want = stored(store.run_dir(tmp_path / "whole", "r"))
    pd.testing.assert_frame_equal(got, want, check_exact=True)  # 0 rows lost, 0 doubled
    shards = store.read_manifest(data, run_id)["shards"]
    assert shards["parts_this_session"] == 24 - before
    assert not parts.exists()


def test_a_rerun_with_other_settings_is_refused_naming_them(tmp_path, capsys):
    base = config(tmp_path, "data", probes=("sink",), probe_params={}, shards=2, run_id="r")
    scan_runs.run([base])
    parts = scan_parts.parts_root(base.data_dir) / "r"
    # As if killed after its first shard: the run gone, one part left.
    run = store.run_dir(base.data_dir, "r")
    for path in sorted(run.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    run.rmdir()
    parts.mkdir(parents=True)
    (parts / "part-shard-0000-of-0002.pt").write_bytes(b"not computed here")
    store.write_json(
        parts / scan_parts.SETTINGS_FILE, scan_parts.settings(base, scan.prompt_suite(base))
    )
    argv = ["scan", "--model", "tiny-random", "--data", str(base.data_dir), "--run-id", "r",
            "--prompts", str(base.prompts), "--probes", "sink", "--shards", "2", "--quiet",
            "--batch-size", "3", "--max-tokens", "32"]  # fmt: skip
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "run 'r' has finished shards of a scan with other settings (--max-tokens differ" in line
    assert sorted(p.name for p in parts.iterdir()) == ["part-shard-0000-of-0002.pt",
                                                       scan_parts.SETTINGS_FILE]  # fmt: skip


def test_a_decoding_probe_shows_its_own_bar_not_a_scan_bar_standing_still(tmp_path, capsys):
    """A retrieval-only scan reads none of the suite's prompts: the scan's prompt bar used to
    jump to 16/16 at once and then stand still for the whole decode."""
    only_retrieval = {"probes": ("retrieval",), "probe_params": {"retrieval": PARAMS["retrieval"]}}
    scan_runs.run([config(tmp_path, "shown", progress=True, **only_retrieval)])
    err = capsys.readouterr().err
    assert "retrieval tiny-random" in err and "2/2" in err
    assert "prompt/s" not in err and "scan tiny-random" not in err
    scan_runs.run([config(tmp_path, "quiet", **only_retrieval)])  # progress=False: no bar
    assert capsys.readouterr().err == ""


def test_a_loaded_model_is_used_and_named(tiny_model, tmp_path):
    directory = scan_runs.run_one(
        config(tmp_path, "data", probes=("sink",), probe_params={}), tiny_model
    )
    assert store.read_manifest(tmp_path / "data", directory.name)["shards"]["count"] == 1
    with pytest.raises(scan.ConfigError, match="the model given is 'tiny-random'"):
        scan_runs.run_one(replace(config(tmp_path, "data", probes=("sink",), probe_params={}),
                         model="tiny-random-2"), tiny_model)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shards", "0"], "--shards must be a whole number ≥ 1, got 0"),
        (["--shards", "5"], "--shards 5 is more than the 4 batches the 11 prompts make with "
                            "--batch-size 3; give at most 4"),
        (["--model", "tiny-random", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model", "tiny-random", "--model", "tiny-random"], "--model tiny-random given more"),
        (["--probes", "retrieval", "--shards", "2"], "there is nothing to shard"),
        (["--workers", "2"], "--workers applies to the ray executor only"),
        (["--cpus-per-worker", "2"], "--cpus-per-worker applies to the ray executor only"),
        (["--executor", "ray", "--workers", "0"], "--workers must be a whole number ≥ 1, got 0"),
        (["--executor", "ray", "--address", "head"], "--address must be auto or HOST:PORT"),
        (["--executor", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers there"),
        (["--executor", "ray", "--gpus-per-worker", "1"], "use it with --device cuda"),
        (["--threads", "0"], "--threads must be a whole number ≥ 1, got 0"),
    ],
)  # fmt: skip
def test_bad_scan_flags_are_one_line_errors_that_write_nothing(flags, message, tmp_path, capsys):
    data = tmp_path / "data"
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    argv = ["scan", "--data", str(data), "--prompts", str(prompts), "--batch-size", "3",
            "--quiet", *flags]  # fmt: skip
    if "--model" not in flags:
        argv += ["--model", "tiny-random"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not data.exists()


def test_ray_missing_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys):
    from analyses.executors import options

    monkeypatch.setattr(options.importlib.util, "find_spec", lambda name: None)
    argv = ["scan", "--model", "tiny-random", "--data", str(tmp_path / "data"), "--quiet",
            "--executor", "ray"]  # fmt: skip
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--executor ray needs Ray, which is not installed here" in line
    assert not (tmp_path / "data").exists()


def test_several_models_with_a_run_id_get_runs_named_after_them():
    assert scan_runs.run_ids(["a"], "x") == ["x"]
    assert scan_runs.run_ids(["tiny-random", "/m/My Model"], "x") == ["x-tiny-random",
                                                                     "x-My_Model"]  # fmt: skip
    assert scan_runs.run_ids(["a", "b"], None) == [None, None]
