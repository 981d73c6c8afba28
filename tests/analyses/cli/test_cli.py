import json
import subprocess
import sys

import pytest

from analyses.cli import main as cli
from analyses.results import store


def prompt_file(tmp_path, lines):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "--model", "gpt-17"], "unknown model 'gpt-17'"),
        (["scan", "--model", "tiny-random", "--probes", "nope"], "unknown probe 'nope'"),
        (["scan", "--model", "tiny-random", "--max-tokens", "100000"], "max_tokens=100000"),
        (["show", "ghost"], "no run 'ghost'"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(tmp_path, capsys, args, message):
    code, _, err = run_cli([*args, "--data", str(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("headlab: error: ") and message in err
    assert "Traceback" not in err
    assert store.run_ids(tmp_path) == []  # nothing half-written


def test_empty_and_malformed_prompt_files(tmp_path, capsys):
    empty = prompt_file(tmp_path, [""])
    code, _, err = run_cli(
        ["scan", "--model", "tiny-random", "--prompts", str(empty), "--data", str(tmp_path)], capsys
    )
    assert code == 2 and "holds no prompts" in err
    broken = prompt_file(tmp_path, [json.dumps({"text": "fine"}), "{oops"])
    code, _, err = run_cli(
        ["scan", "--model", "tiny-random", "--prompts", str(broken), "--data", str(tmp_path)],
        capsys,
    )
    assert code == 2 and f"{broken}:2: not valid JSON" in err


def test_unwritable_output_directory_is_named_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(
        ["scan", "--model", "tiny-random", "--data", str(blocker / "data")], capsys
    )
    assert code == 2 and f"output directory {blocker}/data/runs is not writable" in err


def test_scan_runs_show_on_the_tiny_model(tmp_path, capsys):
    prompts = prompt_file(
        tmp_path,
        [
            json.dumps({"text": "the cat went to the park"}),
            json.dumps({"text": "mary gave the ball to john"}),
        ],
    )
    code, out, _ = run_cli(
        [
            "scan",
            "--model",
            "tiny-random",
            "--prompts",
            str(prompts),
            "--data",
            str(tmp_path),
            "--run-id",
            "t1",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0 and "sink/alpha" in out and "t1" in out
    manifest = store.read_manifest(tmp_path, "t1")
    assert manifest["prompts"]["n_prompts"] == 2
    assert manifest["probes"]["sink"]["epsilon"] == 0.3
    assert manifest["model"]["source"] == "random"
    assert set(manifest["timings"]) == {"load_s", "scan_s", "total_s"}
    code, out, _ = run_cli(["runs", "--data", str(tmp_path)], capsys)
    assert code == 0 and "t1" in out and "tiny-random" in out
    code, out, _ = run_cli(["show", "latest", "--data", str(tmp_path), "--top", "2"], capsys)
    assert code == 0 and out.count("L") >= 2


def test_every_command_has_help(capsys):
    for command in ["scan", "runs", "show", "prepare", "models", "probes", "bench", "sweep",
                    "mask-retrieval", "induction-check", "dashboard"]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: headlab" in capsys.readouterr().out


@pytest.mark.slow
def test_scan_of_the_real_default_model_covers_all_270_heads(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "analyses.cli",
            "scan",
            "--model",
            "smollm2-135m",
            "--probes",
            "sink",
            "--max-tokens",
            "64",
            "--data",
            str(tmp_path),
            "--run-id",
            "real",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Sink_1" in result.stdout and str(tmp_path / "runs" / "real") in result.stdout
    assert "scan smollm2-135m" in result.stderr  # the progress bar
    table = store.load_run(tmp_path, "real")
    heads = table[table.metric == "alpha"][["layer", "head"]].drop_duplicates()
    assert len(heads) == 270
    manifest = store.read_manifest(tmp_path, "real")
    assert manifest["model"]["weights_sha256"]
    assert manifest["prompts"]["name"] == "stdlib-docs"
    assert manifest["versions"]["transformer-lens"] == "4.3.0"


def test_scans_started_in_the_same_second_get_short_ids_of_their_own(tmp_path, capsys, monkeypatch):
    from datetime import UTC, datetime

    from analyses.results import run_ids

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 2, 4, 31, 16, tzinfo=UTC)

    monkeypatch.setattr(run_ids, "datetime", Frozen)
    argv = ["scan", "--model", "tiny-random", "--probes", "sink", "--max-tokens", "16",
            "--quiet", "--data", str(tmp_path)]  # fmt: skip
    for _ in range(2):
        code, out, _ = run_cli(argv, capsys)
        assert code == 0
    assert store.run_ids(tmp_path) == [
        "tiny-random-sink-20261202-043116",
        "tiny-random-sink-20261202-043116-2",  # the first is never overwritten
    ]
    assert "run tiny-random-sink-20261202-043116-2:" in out
    assert store.read_manifest(tmp_path, "tiny-random-sink-20261202-043116-2")["config"][
        "probes"
    ] == ["sink"]  # the manifest keeps what the id leaves out


def test_ctrl_c_that_left_a_string_exec_still_exits_130(tmp_path):
    """Ctrl-C while dataclasses `exec` a method: CPython 3.11 then marks the interrupt as
    unhandled, and `python -m` would die by SIGINT (-2) instead of exiting 130 (seen in make
    test about one run in six)."""
    module = tmp_path / "interrupted_cli.py"
    module.write_text(
        "import analyses.cli\nimport analyses.cli.main\n\n"
        "def main(argv=None):\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        return 130\n\n"
        "analyses.cli.main.main = main\nanalyses.cli.run()\n"
    )
    result = subprocess.run([sys.executable, "-m", "interrupted_cli"], cwd=tmp_path, check=False)
    assert result.returncode == 130


def test_ctrl_c_during_a_scan_exits_130_and_writes_nothing(tmp_path):
    """The signal is sent once the progress bar shows tokens scanned."""
    import re
    import signal
    import threading
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    data = tmp_path / "data"
    # ~100k tokens (seconds on the tiny model), so that the scan is still running when signalled
    prompts = tmp_path / "long.jsonl"
    text = " ".join(f"word{i % 97} of the text" for i in range(120))
    prompts.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i in range(400)))
    argv = ["scan", "--model", "tiny-random", "--data", str(data), "--run-id", "ctrl-c",
            "--prompts", str(prompts), "--max-tokens", "256"]  # fmt: skip

    # A shell's background job (`make test &`) ignores SIGINT, and a child inherits that: give
    # the command a terminal user's default, as pressing Ctrl-C presumes.
    def interruptible() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen([sys.executable, "-m", "analyses.cli", *argv], cwd=repo,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)  # fmt: skip
    chunks: list[str] = []
    scanning = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read(1):
            chunks.append(chunk)
            if not scanning.is_set() and re.search(r"[1-9]\d*/\d+ \[", "".join(chunks[-200:])):
                scanning.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert scanning.wait(timeout=120), "".join(chunks)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=60)
    process.stderr.close()
    err = "".join(chunks)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("headlab: interrupted; nothing was written")
    assert not (data / "runs" / "ctrl-c").exists()
    runs = data / "runs"
    assert (sorted(p.name for p in runs.iterdir()) if runs.exists() else []) == []
