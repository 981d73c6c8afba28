"""`headlab scan` of image prompts with the divergence probe: VHD at the generated tokens, the
answers beside the rows, `headlab show` of the run, and one-line errors for bad parameters."""

from pathlib import Path

import pytest

from analyses.cli import main as cli
from analyses.results import store
from probes.core import schema

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
SCAN = ["scan", "--model", "tiny-random-llava", "--prompts", str(IMAGE_PROMPTS)]


def test_scan_scores_the_generated_answer_and_show_reads_the_run(tmp_path, capsys):
    args = [*SCAN, "--probes", "divergence,sink", "--param", "divergence.max_new_tokens=5"]
    assert cli.main([*args, "--data", str(tmp_path), "--run-id", "g", "--quiet"]) == 0
    table = store.load_run(tmp_path, "g")
    answers = store.read_side_table(tmp_path, "g", schema.DIVERGENCE_ANSWERS_TABLE)
    assert set(answers["answer"]) == {"generated"} and len(answers) == 3
    per_token = table[table.metric == "t_vhd"]
    for answer in answers.itertuples():
        rows = per_token[per_token["prompt"] == answer.prompt]
        assert 1 <= len(rows) <= 5 and len(rows) == len(answer.token_ids)
        assert list(rows["token"]) == list(answer.tokens)
        assert rows.value.tolist() == pytest.approx(list(answer.t_vhd))
    capsys.readouterr()
    assert cli.main(["show", "g", "--data", str(tmp_path)]) == 0
    assert "divergence/vhd" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("--param divergence.answer=sampled", "--param divergence.answer must be one of"),
        ("--param divergence.max_new_tokens=0", "divergence.max_new_tokens must be at least 1"),
        ("--param divergence.max_new_tokens=abc", "expected a whole number, got 'abc'"),
        ("--max-tokens 30", "exceed the 30 tokens allowed (max_tokens, the model's context)"),
    ],
)
def test_bad_parameters_exit_2_with_one_line(tmp_path, capsys, param, message):
    args = [*SCAN, "--probes", "divergence", *param.split(" "), "--data", str(tmp_path), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
