"""Qwen2.5-VL's image preprocessing and prompt expansion, against transformers' own
Qwen2VLImageProcessorPil (its PIL backend: no torchvision) and Qwen2_5_VLProcessor."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from probes.inputs.images_qwen import QwenReader, preprocess, smart_resize
from probes.inputs.pixels import read_image
from probes.models.vision import VisionInputs, VisionModelError
from probes.models.vision_qwen import (
    IMAGE_PAD,
    VISION_END,
    VISION_START,
    QwenProcessing,
    qwen_inputs,
    qwen_tokenizer,
)

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "data" / "prompts" / "images"
SMALL_MAX = 28 * 28 * 6  # a low max_pixels, so that large images are scaled down


def tokenizer_and_vision(**fields):
    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, IMAGE_PAD, VISION_END)}
    processing = QwenProcessing(ids[VISION_START], ids[VISION_END], **fields)
    return tokenizer, VisionInputs("qwen2_5_vl", ids[IMAGE_PAD], None, processing)


def reference_processor(tokenizer, **kwargs):
    """transformers' Qwen2_5_VLProcessor over its PIL image processor. Its constructor checks
    the video processor's class through a mapping that needs torchvision (unused for images):
    that one check is lifted while it is built."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None
    try:
        return Qwen2_5_VLProcessor(Qwen2VLImageProcessorPil(**kwargs), tokenizer)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


def odd_images():
    transparent = Image.new("RGBA", (30, 50), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((5, 5, 25, 40), fill=(200, 40, 90, 128))
    wide = Image.new("RGB", (300, 20), "white")
    ImageDraw.Draw(wide).rectangle((250, 0, 299, 19), fill="blue")
    return {
        "wide": wide,  # 20 × 300: rounds to 28 × 308
        "tall": Image.new("RGB", (33, 290), "green"),
        "transparent": transparent,
        "grey": Image.new("L", (90, 33), 77),
        "small": Image.new("RGB", (9, 7), "red"),  # below min_pixels: scaled up
        "large": Image.effect_noise((400, 260), 60).convert("RGB"),  # above SMALL_MAX: down
    }


def image_named(name):
    return odd_images()[name] if name in odd_images() else read_image(IMAGES / f"{name}.png")


NAMES = ["red_square", "blue_circle", "green_stripes", "blank", *odd_images()]


@pytest.mark.parametrize("max_pixels", [28 * 28 * 1280, SMALL_MAX])
@pytest.mark.parametrize("name", NAMES)
def test_pixels_grid_and_prompt_ids_equal_transformers_processor(name, max_pixels):
    image = image_named(name)
    tokenizer, vision = tokenizer_and_vision(max_pixels=max_pixels)
    processor = reference_processor(tokenizer, max_pixels=max_pixels)
    before, after = "look at ", " what is the color of the thing ?"
    text = f"{before}{VISION_START}{IMAGE_PAD}{VISION_END}{after}"
    reference = processor(images=[image], text=[text], return_tensors="np")

    reader = QwenReader()
    ours = [*tokenizer(before)["input_ids"], *reader.image_tokens(vision, image)]
    ours += tokenizer(after)["input_ids"]
    assert ours == reference["input_ids"][0].tolist()
    tokens = torch.tensor([ours])
    inputs = reader.forward_inputs(vision, [image], tokens)
    assert inputs["pixel_values"].dtype == torch.float32
    np.testing.assert_array_equal(inputs["pixel_values"].numpy(), reference["pixel_values"])
    assert inputs["image_grid_thw"].tolist() == reference["image_grid_thw"].tolist()
    assert inputs["mm_token_type_ids"].tolist() == reference["mm_token_type_ids"].tolist()


def test_two_images_in_a_batch_concatenate_their_patches_in_order():
    tokenizer, vision = tokenizer_and_vision()
    images = [image_named("wide"), image_named("red_square")]
    reference = reference_processor(tokenizer).image_processor(images, return_tensors="np")
    tokens = torch.zeros((2, 4), dtype=torch.long)
    ours = QwenReader().forward_inputs(vision, images, tokens)
    np.testing.assert_array_equal(ours["pixel_values"].numpy(), reference["pixel_values"])
    assert ours["image_grid_thw"].tolist() == [[1, 2, 22], [1, 4, 4]]


def test_smart_resize_keeps_multiples_of_28_within_the_pixel_bounds():
    processing = tokenizer_and_vision(max_pixels=SMALL_MAX)[1].processing
    # 28 × 308 is over 28² · 6: scaled by √(6000 / 4704), floored to 28 × 252 (the height's
    # floor at one factor leaves it over max_pixels, as in transformers)
    assert smart_resize(20, 300, processing) == (28, 252)
    assert smart_resize(7, 9, processing) == (56, 84)  # scaled up to min_pixels (56²)
    assert smart_resize(48, 64, processing) == (56, 56)
    with pytest.raises(VisionModelError, match="aspect ratio at most 200"):
        smart_resize(1, 201, processing)


def test_token_boxes_tile_a_wide_image_in_merged_cells_row_by_row():
    _, vision = tokenizer_and_vision()
    boxes = QwenReader().token_boxes(vision, 300, 20)  # resized 308 × 28: 11 × 1 merged cells
    assert len(boxes) == len(QwenReader().image_tokens(vision, image_named("wide"))) - 2 == 11
    assert [b.x0 for b in boxes] == pytest.approx([c / 11 for c in range(11)])
    assert all(b.y0 == 0 and b.y1 == 1 for b in boxes)
    assert boxes[-1].x1 == pytest.approx(1.0)
    square = QwenReader().token_boxes(vision, 64, 48)  # 56 × 56: 2 × 2 merged cells
    assert [(b.x0, b.y0) for b in square] == [(0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5)]


def test_the_wide_images_blue_end_is_in_the_tokens_whose_boxes_reach_it():
    """Blue fills x ≥ 250 of the 300-pixel-wide image: the tokens whose boxes reach past
    250 / 300 hold blue patches, the others white ones (patch order and boxes agree)."""
    _, vision = tokenizer_and_vision()
    patches, (_, grid_h, grid_w) = preprocess(image_named("wide"), vision.processing)
    channels = patches.reshape(grid_h * grid_w // 4, 4, 3, 2, 14, 14).mean(axis=(1, 3, 4, 5))
    blueness = channels[:, 2] - channels[:, 0]  # per image token
    boxes = QwenReader().token_boxes(vision, 300, 20)
    reaching = [box.x1 > 250 / 300 for box in boxes]
    assert reaching == [False] * 9 + [True] * 2
    white, reached = blueness[0], blueness[reaching]
    assert np.abs(blueness[:9] - white).max() < 1e-6
    assert reached.min() > white + 1


class Config:
    """The parts of a Qwen2_5_VLConfig that qwen_inputs reads."""

    image_token_id, vision_start_token_id, vision_end_token_id = 7, 5, 6

    class vision_config:
        patch_size, spatial_merge_size, temporal_patch_size = 14, 2, 2


def test_a_checkpoints_preprocessor_config_is_read_in_either_spelling():
    legacy = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}
    sized = {"size": {"shortest_edge": 3136, "longest_edge": 12845056}, "resample": 2}
    first = qwen_inputs(Config, legacy, "q").processing
    second = qwen_inputs(Config, sized, "q").processing
    assert (first.min_pixels, first.max_pixels) == (second.min_pixels, second.max_pixels)
    assert first.max_pixels == 12845056 and first.resample == "bicubic"
    assert second.resample == "bilinear"
    assert (first.start_token_id, first.end_token_id) == (5, 6)
    with pytest.raises(VisionModelError, match="merge_size=4 but the vision tower's config has 2"):
        qwen_inputs(Config, {"merge_size": 4}, "q")
    with pytest.raises(VisionModelError, match="skips"):
        qwen_inputs(Config, {"do_normalize": False}, "q")
    with pytest.raises(VisionModelError, match="min_pixels exceeds"):
        qwen_inputs(Config, {"min_pixels": 10**6, "max_pixels": 10}, "q")
