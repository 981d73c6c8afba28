"""`headlab scan` with image prompts on tiny-random-qwen2.5-vl: per-head VHD, visual sink and
image-share rows, and the image tokens' boxes stored for the dashboard."""

from pathlib import Path

from analyses.cli import main as cli
from analyses.results import store

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
PROMPTS = ["blue-circle", "green-stripes", "red-square"]


def test_scan_writes_vhd_visual_sink_and_image_rows_for_every_head(tmp_path, capsys):
    args = ["scan", "--model", "tiny-random-qwen2.5-vl", "--prompts", str(IMAGE_PROMPTS)]
    args += ["--probes", "divergence,sink,image_attention", "--data", str(tmp_path)]
    code = cli.main([*args, "--run-id", "q", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "divergence/vhd" in out and "sink/visual_sink_alpha" in out
    table = store.load_run(tmp_path, "q")
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    for metric in ("vhd", "visual_sink_alpha", "hidden_sink_rate", "image_share"):
        rows = table[table.metric == metric]
        assert set(zip(rows.layer, rows["head"], strict=True)) == heads, metric
        assert len(rows) == len(heads)
    sinks = table[table.metric == "visual_sink"]
    assert sorted(set(sinks.prompt)) == PROMPTS
    assert (sinks.token == "<|image_pad|>").all()
    manifest = store.read_manifest(tmp_path, "q")
    assert manifest["model"]["architecture"] == "Qwen2_5_VLForConditionalGeneration"
    assert manifest["model"]["image_tokens"] is None  # it follows each image's size
    images = store.read_side_table(tmp_path, "q", "image_prompts")
    assert sorted(images.prompt) == PROMPTS
    assert all(len(boxes["x0"]) == 4 for boxes in images.boxes)  # 56 × 56: 2 × 2 merged cells
