"""Image prompts through the engine on tiny-random-qwen2.5-vl: divergence with vs without the
image, visual sink tokens and attention per image token, with planted heads whose answer is
known, and the stored boxes of a wide image's tokens."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from probes import engine
from probes.core import schema
from probes.families.image_attention import ImageAttentionParams, ImageAttentionProbe
from probes.inputs.images import patch_boxes
from probes.inputs.prompts import load_jsonl
from probes.models import load
from tests import planting
from tests.probes.engine.image_scans import IMAGE_PROMPTS, per_head, scan

HEADS = {(layer, head) for layer in range(2) for head in range(4)}


@pytest.fixture(scope="module")
def qwen():
    return load("tiny-random-qwen2.5-vl")


def test_image_tokens_are_wrapped_grid_tokens_where_the_placeholder_was(qwen):
    suite = load_jsonl(IMAGE_PROMPTS)
    tokenized = {p.id: p for p in engine.tokenize_suite(qwen, suite, max_tokens=256)}
    processing = qwen.vision.processing
    image = [qwen.vision.image_token_id] * 4  # 64 × 48 → 56 × 56 pixels: 2 × 2 merged tokens
    text = qwen.tokenize(" what is the color of the thing ? the color is blue", False)
    assert tokenized["blue-circle"].tokens == (
        qwen.info.bos_token_id,
        processing.start_token_id,
        *image,
        processing.end_token_id,
        *text,
    )


def test_every_head_gets_vhd_visual_sink_and_image_share_rows(qwen):
    table = scan(qwen, probes=("divergence", "sink", "image_attention"))
    for metric in ("vhd", "visual_sink_alpha", "image_share"):
        assert set(per_head(table, metric)) == HEADS, metric
    assert all(math.isfinite(v) and v > 0 for v in per_head(table, "vhd").values())
    sinks = table[table.metric == "visual_sink"]
    assert set(sinks.prompt) == {"red-square", "blue-circle", "green-stripes"}
    assert (sinks.token == "<|image_pad|>").all()  # only image tokens, never the wrapping


def test_a_head_that_never_reads_the_image_has_divergence_zero(qwen):
    """Layer 0 heads reading only their own token or BOS see the same values with and without
    the image (mRoPE moves the text after the image, but rotary acts on queries and keys, not
    on the values a head outputs); a uniform head averages over the image when it is there."""
    plants = [
        planting.attend_to(0, 0, lambda q: q),
        planting.bos_head(0, 1),
        planting.uniform_head(0, 2),
    ]
    vhd = per_head(scan(qwen, plants=plants, probes=("divergence",)), "vhd")
    assert vhd[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 1)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 2)] > 100 * max(vhd[(0, 0)], vhd[(0, 1)], 1e-7)


def test_a_planted_visual_sink_is_found_and_vision_start_is_not_one(qwen):
    # Position 5 is an <|image_pad|> in every committed prompt (the images start at 2 or 4).
    plants = [planting.attend_to(1, 2, lambda q: 5 if q >= 5 else 0)]
    table = scan(qwen, plants=plants, probes=("sink",))
    visual = per_head(table, "visual_sink_alpha")
    assert visual[(1, 2)] == pytest.approx(1.0, abs=1e-5)
    assert max(v for head, v in visual.items() if head != (1, 2)) < 0.5
    top = table[table.metric == "visual_sink"].sort_values("value").groupby("prompt").last()
    assert set(top.position) == {5}
    # Position 1 is <|vision_start|> in blue-circle, text in the others: no image token, so a
    # head fixed there is no visual sink.
    on_start = [planting.attend_to(1, 2, lambda q: 1 if q >= 1 else 0)]
    visual = per_head(scan(qwen, plants=on_start, probes=("sink",)), "visual_sink_alpha")
    assert visual[(1, 2)] < 1e-3


@pytest.fixture(scope="module")
def wide_prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    image = Image.new("RGB", (300, 20), "white")
    image.paste((0, 0, 255), (250, 0, 300, 20))
    image.save(folder / "wide.png")
    line = {"id": "wide", "text": "look at <image> the thing is blue", "image": "wide.png"}
    (folder / "wide.jsonl").write_text(json.dumps(line) + "\n")
    return folder / "wide.jsonl"


def test_image_attention_stores_a_wide_images_token_boxes_and_weights(qwen, wide_prompts):
    """A head fixed on the wide image's last token: all its text attention is on the token
    whose box is the image's right end."""
    suite = load_jsonl(wide_prompts)
    (prompt,) = engine.tokenize_suite(qwen, suite, 256)
    image = [i for i, t in enumerate(prompt.tokens) if t == qwen.vision.image_token_id]
    assert len(image) == 11  # 308 × 28 pixels: 11 × 1 merged cells
    last = image[-1]
    probe = ImageAttentionProbe(qwen.info, ImageAttentionParams(n_prompts=1))
    plants = [planting.attend_to(1, 3, lambda q: last if q >= last else 0)]
    with planting.planted(qwen, plants):
        engine.run(qwen, [probe], suite, progress=False)
    tables = probe.tables()
    stored = tables[schema.IMAGE_PROMPTS_TABLE].iloc[0]
    assert (stored.width, stored.height, stored.image_start) == (300, 20, image[0])
    columns = stored.boxes
    boxes = list(zip(*(columns[name] for name in ("x0", "y0", "x1", "y1", "view")), strict=True))
    expected = [(b.x0, b.y0, b.x1, b.y1, b.view) for b in patch_boxes(qwen.vision, 300, 20)]
    assert boxes == expected and len(boxes) == 11
    assert boxes[-1][0] == pytest.approx(10 / 11) and boxes[-1][2] == pytest.approx(1.0)
    table = tables[schema.IMAGE_ATTENTION_TABLE]
    fixed = table[(table.layer == 1) & (table["head"] == 3)].weights.iloc[0]
    np.testing.assert_allclose(fixed.astype(np.float64), [0.0] * 10 + [1.0], atol=1e-3)
