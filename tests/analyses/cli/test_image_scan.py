"""`headlab scan` with image prompts on tiny-random-llava, and its one-line errors."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from analyses.cli import main as cli
from analyses.results import store

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"


def run_cli(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scan_writes_vhd_and_visual_sink_rows_for_every_head(tmp_path, capsys):
    args = ["scan", "--model", "tiny-random-llava", "--prompts", str(IMAGE_PROMPTS)]
    args += ["--probes", "divergence,sink", "--data", str(tmp_path), "--run-id", "v", "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "divergence/vhd" in out and "sink/visual_sink_alpha" in out
    table = store.load_run(tmp_path, "v")
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    for metric in ("vhd", "visual_sink_alpha", "hidden_sink_rate"):
        rows = table[table.metric == metric]
        assert set(zip(rows.layer, rows["head"], strict=True)) == heads, metric
        assert len(rows) == len(heads)
    assert sorted(set(table[table.metric == "visual_sink"].prompt)) == [
        "blue-circle",
        "green-stripes",
        "red-square",
    ]
    manifest = store.read_manifest(tmp_path, "v")
    assert manifest["model"]["architecture"] == "LlavaForConditionalGeneration"
    assert manifest["model"]["image_tokens"] == 16
    assert manifest["prompts"]["source"] == str(IMAGE_PROMPTS)


def image_file(tmp_path, record):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    ("record", "extra", "message"),
    [
        ({"text": "a <image> b", "image": "gone.png"}, [], ":1: image file .*gone.png does not"),
        ({"text": "a b", "image": "ok.png"}, [], ":1: the text of an image prompt must hold"),
        ({"text": "a <image> b", "image": "ok.png"}, ["--model", "tiny-random"], "text model"),
        ({"text": "a <image> b", "image": "ok.png"}, ["--path", "fast"], "fast path does not"),
    ],
)
def test_bad_image_scans_are_one_line_and_exit_2_before_any_model_loads(
    tmp_path, capsys, monkeypatch, record, extra, message
):
    from probes import models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load", no_loading)
    path = image_file(tmp_path, record)
    args = ["scan", "--model", "tiny-random-llava", "--prompts", str(path), *extra]
    code, _, err = run_cli([*args, "--probes", "sink", "--data", str(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("headlab: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert store.run_ids(tmp_path) == []
