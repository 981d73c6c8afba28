"""`headlab scan` with image prompts on tiny-random-idefics3 (SmolVLM's architecture)."""

from pathlib import Path

from analyses.cli import main as cli
from analyses.results import store
from probes.core import schema

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
PROMPTS = ["blue-circle", "green-stripes", "red-square"]


def test_scan_writes_vhd_visual_sink_and_image_attention_rows_for_every_head(tmp_path, capsys):
    args = ["scan", "--model", "tiny-random-idefics3", "--prompts", str(IMAGE_PROMPTS)]
    args += ["--probes", "divergence,sink,image_attention", "--data", str(tmp_path)]
    code = cli.main([*args, "--run-id", "i", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "divergence/vhd" in out and "sink/visual_sink_alpha" in out
    table = store.load_run(tmp_path, "i")
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    for metric in ("vhd", "visual_sink_alpha", "hidden_sink_rate", "image_share"):
        rows = table[table.metric == metric]
        assert set(zip(rows.layer, rows["head"], strict=True)) == heads, metric
        assert len(rows) == len(heads)
    sinks = table[table.metric == "visual_sink"]
    assert sorted(set(sinks.prompt)) == PROMPTS and (sinks.token == "<image>").all()
    manifest = store.read_manifest(tmp_path, "i")
    assert manifest["model"]["architecture"] == "Idefics3ForConditionalGeneration"
    assert manifest["model"]["image_tokens"] is None  # it depends on the image's size
    images = store.read_side_table(tmp_path, "i", schema.IMAGE_PROMPTS_TABLE)
    for boxes in images.boxes:  # 2 × 2 crops and the global view, 16 image tokens each
        assert len(boxes["view"]) == 5 * 16
        assert list(boxes["view"][::16]) == [
            "crop 1,1",
            "crop 1,2",
            "crop 2,1",
            "crop 2,2",
            "global",
        ]
