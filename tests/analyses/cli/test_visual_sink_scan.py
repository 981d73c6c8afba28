"""`headlab scan ... --probes divergence,sink` on tiny-random-llava writes the visual-sink rows
by massive activation, and `headlab show` reads the run."""

from pathlib import Path

from analyses.cli import main as cli
from analyses.results import store

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"


def test_scan_writes_massive_visual_sink_rows_and_show_reads_them(tmp_path, capsys):
    args = ["scan", "--model", "tiny-random-llava", "--prompts", str(IMAGE_PROMPTS)]
    args += ["--probes", "divergence,sink", "--data", str(tmp_path), "--run-id", "v", "--quiet"]
    args += ["--param", "sink.tau=1.6"]  # d_model = 32: RMS-normed values stay under √32
    assert cli.main(args) == 0, capsys.readouterr().err
    table = store.load_run(tmp_path, "v")
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    for metric in ("visual_sink_share", "image_centric_rate"):
        rows = table[table.metric == metric]
        assert set(zip(rows.layer, rows["head"], strict=True)) == heads, metric
        assert rows.value.between(0, 1).all()
    counts = table[table.metric == "massive_visual_sink_count"]
    assert len(counts) == 3 * 2  # per prompt and layer
    assert not table[table.metric == "massive_visual_sink"].empty
    capsys.readouterr()
    assert cli.main(["show", "v", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sink/image_centric_rate" in out and "sink/visual_sink_share" in out
