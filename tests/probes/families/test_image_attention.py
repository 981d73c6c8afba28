"""The image_attention probe on tiny-random-llava, with planted heads whose answer is known, and
the token boxes it stores, checked against the CLIP preprocessing they describe."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probes import engine
from probes.core import schema
from probes.core.errors import ConfigError
from probes.families.image_attention import ImageAttentionParams, ImageAttentionProbe
from probes.inputs.images import patch_boxes
from probes.inputs.images_clip import preprocess
from probes.inputs.pixels import PatchBox
from probes.inputs.prompts import load_jsonl
from probes.models import load
from probes.models.vision import ImageProcessing, VisionInputs, VisionModelError
from tests import planting

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
N_IMAGE = 16  # tiny-random-llava: (56 / 14)² patches


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


def run(model, plants=(), n_prompts: int = 4):
    probe = ImageAttentionProbe(model.info, ImageAttentionParams(n_prompts=n_prompts))
    with planting.planted(model, plants):
        rows = engine.run(model, [probe], load_jsonl(IMAGE_PROMPTS), progress=False)
    return rows, probe.tables()


def image_start(model, prompt_id: str) -> int:
    suite = load_jsonl(IMAGE_PROMPTS)
    (prompt,) = [p for p in engine.tokenize_suite(model, suite, 256) if p.id == prompt_id]
    return prompt.tokens.index(model.vision.image_token_id)


def share(rows, layer: int, head: int) -> float:
    selected = rows[(rows.metric == "image_share") & (rows.layer == layer) & (rows["head"] == head)]
    return float(selected.value.iloc[0])


def weights(tables, prompt: str, layer: int, head: int) -> np.ndarray:
    table = tables[schema.IMAGE_ATTENTION_TABLE]
    row = table[(table.prompt == prompt) & (table.layer == layer) & (table["head"] == head)]
    return row.weights.iloc[0].astype(np.float64)


def test_a_head_fixed_on_one_patch_puts_all_its_text_attention_there(llava):
    # Every query reads key 5 once it can (an image token of every prompt: the image starts at
    # position 1 or 3 and is 16 tokens long), so every text query after the image reads it.
    rows, tables = run(llava, [planting.attend_to(1, 2, lambda q: 5 if q >= 5 else 0)])
    assert share(rows, 1, 2) == pytest.approx(1.0, abs=1e-5)
    for prompt in ("red-square", "blue-circle", "green-stripes"):
        expected = np.zeros(N_IMAGE)
        expected[5 - image_start(llava, prompt)] = 1.0
        np.testing.assert_allclose(weights(tables, prompt, 1, 2), expected, atol=1e-3)


def test_negative_a_first_token_head_never_reads_the_image(llava):
    rows, tables = run(llava, [planting.bos_head(0, 1)])
    assert share(rows, 0, 1) == pytest.approx(0.0, abs=1e-6)
    assert np.abs(weights(tables, "blue-circle", 0, 1)).max() == 0.0
    assert 0.05 < share(rows, 1, 0) < 0.95  # a random head spreads over image and text


def test_a_uniform_head_gives_each_image_token_its_share_of_the_visible_keys(llava):
    _, tables = run(llava, [planting.uniform_head(0, 3)])
    suite = load_jsonl(IMAGE_PROMPTS)
    (prompt,) = [p for p in engine.tokenize_suite(llava, suite, 256) if p.id == "blue-circle"]
    start, length = image_start(llava, "blue-circle"), len(prompt.tokens)
    queries = range(start + N_IMAGE, length)  # query q sees q + 1 keys, 1/(q+1) each
    expected = np.mean([1 / (q + 1) for q in queries])
    np.testing.assert_allclose(weights(tables, "blue-circle", 0, 3), expected, rtol=2e-3)


def test_only_the_first_n_prompts_are_stored_and_share_covers_all(llava):
    rows, tables = run(llava, n_prompts=1)
    assert tables[schema.IMAGE_PROMPTS_TABLE].prompt.tolist() == ["green-stripes"]
    assert len(tables[schema.IMAGE_ATTENTION_TABLE]) == 2 * 4
    assert len(rows[rows.metric == "image_share"]) == 8
    stored = tables[schema.IMAGE_PROMPTS_TABLE].iloc[0]
    with Image.open(IMAGE_PROMPTS.parent / stored.image) as image:
        assert (stored.width, stored.height) == image.size
    assert stored.png.startswith(b"\x89PNG")


def test_a_text_model_is_refused(tiny_model):
    probe = ImageAttentionProbe(tiny_model.info)
    with pytest.raises(ConfigError, match="text model"):
        probe.bind(tiny_model)


def llava_vision(size: int = 56, patch: int = 14, cls: bool = False) -> VisionInputs:
    return VisionInputs("llava", 1, (size // patch) ** 2 + cls, ImageProcessing.clip(size))


def test_boxes_of_a_square_image_tile_it():
    boxes = patch_boxes(llava_vision(), 100, 100)
    assert len(boxes) == 16
    assert boxes[0] == PatchBox(0.0, 0.0, 0.25, 0.25)
    assert boxes[6] == PatchBox(0.5, 0.25, 0.75, 0.5)  # row 1, column 2
    assert boxes[-1] == PatchBox(0.75, 0.75, 1.0, 1.0)


def test_boxes_of_a_wide_image_cover_the_center_crop_the_model_sees():
    # A 2:1 image: the short edge goes to 56, the width to 112, the crop keeps x in [28, 84).
    boxes = [b for b in patch_boxes(llava_vision(), 200, 100) if b is not None]
    assert min(b.x0 for b in boxes) == pytest.approx(0.25)
    assert max(b.x1 for b in boxes) == pytest.approx(0.75)
    assert (min(b.y0 for b in boxes), max(b.y1 for b in boxes)) == (0.0, 1.0)
    # The pixels CLIP keeps for the first patch are the ones the first box names.
    ramp = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    no_normalise = ImageProcessing(56, 56, 56, resample="nearest", mean=(0, 0, 0), std=(1, 1, 1))
    pixels = preprocess(image, no_normalise)[0] * 255
    first_columns = pixels[:, :14]
    assert first_columns.min() >= 200 * boxes[0].x0 - 2
    assert first_columns.max() <= 200 * boxes[0].x1 + 2


def test_cls_has_no_box_and_an_unknown_architecture_is_named():
    boxes = patch_boxes(llava_vision(cls=True), 56, 56)
    assert boxes[0] is None and len(boxes) == 17
    other = VisionInputs("other", 1, 4, ImageProcessing.clip(56))
    with pytest.raises(VisionModelError, match="'other'"):
        patch_boxes(other, 56, 56)
