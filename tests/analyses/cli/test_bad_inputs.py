"""Bad inputs found by the bad-input survey (benchmarks/bad_inputs/): each one a single
`headlab: error:` line naming the input, exit status 2, nothing written."""

import json

import pytest

from analyses.cli import main as cli


def refused(argv, tmp_path, capsys) -> str:
    data = tmp_path / "data"
    try:
        code = cli.main([*argv, "--data", str(data)])
    except SystemExit as usage_error:  # argparse's own refusal
        code = usage_error.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "error:" in lines[0], err
    left = sorted(p.name for p in data.rglob("*")) if data.exists() else []
    assert left == [], left
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "--model", "tiny-random", "--seed", str(2**80)], "seed must be a whole number"),
        (["scan", "--model", "tiny-random", "--probes", "sink,sink"], "['sink'] given more than"),
        (["scan", "--model", "tiny-random", "--run-id", "latest"], "'latest' is reserved"),
        (["scan", "--model", "tiny-random", "--device", "cuda:7"], "device 'cuda:7'"),
        (
            [
                "sweep",
                "--model",
                "tiny-random",
                "--tasks",
                "lm",
                "--single-head",
                "zero",
                "--batch-size",
                "0",
            ],
            "argument --batch-size: must be at least 1, got 0",
        ),
        (["scan", "--param", "sink.epsilon=abc"], "sink.epsilon=abc: expected a number, got 'abc'"),
        (
            ["scan", "--probes", "retrieval", "--param", "retrieval.lengths=a,b"],
            "expected comma-separated whole numbers, got 'a,b'",
        ),
        (
            [
                "scan",
                "--model",
                "tiny-random",
                "--probes",
                "retrieval",
                "--param",
                "retrieval.lengths=300",
            ],
            "--param retrieval.lengths [300] exceed 206 tokens",
        ),
        (
            ["sweep", "--model", "tiny-random", "--strength", "act=1.5", "--strength-heads", "1.2"],
            "act's β is a share of attention in [0, 1], got 1.5",
        ),
        (
            ["sweep", "--model", "tiny-random", "--tasks", "", "--single-head", "zero"],
            "argument --tasks: expected comma-separated names, got ''",
        ),
        (["scan", "--model", ""], "argument --model: expected a name or path, got ''"),
        (["scan", "--prompts", " "], "argument --prompts: expected a name or path, got ' '"),
        (
            ["scan", "--model", "tiny-random", "--path", "fast", "--probes", "divergence"],
            "--path fast: probes ['divergence'] need whole attention patterns",
        ),
        (
            ["sweep", "--model", "tiny-random", "--top-metric", "alpha"],
            "read from --metrics-run (default: --run) 'tiny-random-sweep-",
        ),
    ],
)
def test_refused_with_one_line(argv, message, tmp_path, capsys):
    assert message in refused(argv, tmp_path, capsys)


def test_a_prompt_id_that_is_an_object_is_refused_naming_the_line(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": {"a": 1}, "text": "the cat"}) + "\n")
    line = refused(["scan", "--model", "tiny-random", "--prompts", str(prompts)], tmp_path, capsys)
    assert 'p.jsonl:1: "id" must be text or a whole number' in line


def test_a_task_parameter_of_the_wrong_type_is_refused_before_the_run_exists(tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text('model = "tiny-random"\n[tasks.lm]\nn_prompts = "4"\n[single_head]\n')
    line = refused(["sweep", "--plan", str(plan)], tmp_path, capsys)
    assert "plan.toml: task 'lm': LMParams.n_prompts must be a whole number" in line


def test_a_plan_that_fails_on_the_model_leaves_no_run_and_names_the_plan(tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'model = "tiny-random"\n[tasks.lm]\nn_prompts = 1\n[single_head]\nlayers = [99]\n'
    )
    line = refused(["sweep", "--plan", str(plan), "--quiet"], tmp_path, capsys)
    assert "plan.toml: [single_head] layer 99 is outside model 'tiny-random'" in line


def test_a_data_directory_that_is_a_file_is_named(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert cli.main(["runs", "--data", str(blocker)]) == 2
    assert f"{blocker} is a file, not a directory" in capsys.readouterr().err


def test_show_top_zero_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["show", "latest", "--top", "0"])
    assert stopped.value.code == 2
    assert "argument --top: must be at least 1, got 0" in capsys.readouterr().err


def test_a_probe_parameter_out_of_range_is_named_as_its_flag(tmp_path, capsys):
    line = refused(
        ["scan", "--model", "tiny-random", "--probes", "sink", "--param", "sink.epsilon=-1"],
        tmp_path,
        capsys,
    )
    assert line == "headlab: error: --param sink.epsilon must be in [0, 1), got -1.0"


def test_a_ranking_narrowed_to_nothing_says_what_there_is(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli.main(["scan", "--model", "tiny-random", "--probes", "sink", "--run-id", "base",
                     "--data", str(data), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["sweep", "--model", "tiny-random", "--top-metric", "alpha", "--metrics-run", "base"]
    code = cli.main([*argv, "--top-position", "999", "--data", str(data)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "alpha has no rows with position 999; its positions: 0, 1, 2" in err
    assert err.startswith("headlab: error: run base: ")  # no "command line:" before it
    assert sorted(p.name for p in (data / "runs").iterdir()) == ["base"]


def test_induction_check_top_k_over_half_the_heads_names_the_flag(capsys):
    code = cli.main(["induction-check", "--model", "tiny-random", "--top-k", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "headlab: error: --top-k 5: 'tiny-random' has 8 heads, so at most 4 top heads leave "
        "room for as many random ones"
    )


def test_prepare_does_not_offer_what_it_refuses(capsys):
    assert cli.main(["prepare", "org/name"]) == 2
    err = capsys.readouterr().err
    assert "`headlab prepare` takes a registry name" in err and "give it to --model" in err
