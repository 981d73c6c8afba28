"""Idefics3's image preprocessing and prompt expansion, against transformers' own
Idefics3ImageProcessor (its PIL class, which needs no torchvision) and Idefics3Processor."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from probes.inputs.images_idefics3 import Idefics3Reader, grid, preprocess
from probes.inputs.pixels import read_image
from probes.models.vision import VisionModelError
from probes.models.vision_idefics3 import (
    TINY_PREPROCESSOR,
    SplitProcessing,
    idefics3_tokens,
    special_tokens,
    tiny_idefics3,
)

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "data" / "prompts" / "images"
SMOLVLM = {  # HuggingFaceTB/SmolVLM-256M-Instruct's preprocessor_config.json (its image keys)
    "do_image_splitting": True,
    "max_image_size": {"longest_edge": 512},
    "size": {"longest_edge": 2048},
    "resample": 1,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
NO_SPLITTING = {**TINY_PREPROCESSOR, "do_image_splitting": False}


@pytest.fixture(scope="module")
def tiny():
    return tiny_idefics3(0)


def reference_processor(record, tokenizer=None, image_seq_len=16):
    """transformers' own Idefics3 image processor (PIL backend) or, with a tokenizer, its
    processor, configured from a preprocessor config."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    keys = {k: v for k, v in record.items() if k != "image_processor_type"}
    images = Idefics3ImageProcessorPil(**keys)
    if tokenizer is None:
        return images
    return Idefics3Processor(images, tokenizer, image_seq_len=image_seq_len)


def odd_images():
    transparent = Image.new("RGBA", (30, 50), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((5, 5, 25, 40), fill=(200, 40, 90, 128))
    wide = Image.new("RGB", (97, 30), "white")
    ImageDraw.Draw(wide).rectangle((0, 0, 20, 29), fill=(10, 200, 30))
    tall = Image.new("RGB", (21, 90), (5, 5, 120))
    ImageDraw.Draw(tall).line((0, 0, 20, 89), fill=(250, 250, 0), width=3)
    return {
        "transparent": transparent,
        "grey": Image.new("L", (90, 33), 77),
        "small": Image.new("RGB", (9, 7), "red"),
        "wide": wide,
        "tall": tall,
        "big": Image.new("RGB", (130, 70), (1, 2, 3)),
    }


def image_named(name):
    return odd_images()[name] if name in odd_images() else read_image(IMAGES / f"{name}.png")


NAMES = ["red_square", "blue_circle", "green_stripes", "blank", *odd_images()]


@pytest.mark.parametrize("record", [TINY_PREPROCESSOR, NO_SPLITTING], ids=["tiny", "no-split"])
@pytest.mark.parametrize("name", NAMES)
def test_pixel_values_equal_idefics3_image_processor(name, record):
    image = image_named(name)
    ours = preprocess(image, SplitProcessing.from_preprocessor(record, 16, "test"))
    reference = reference_processor(record)(image, return_tensors="np", return_row_col_info=True)
    expected = reference["pixel_values"][0]
    assert ours.dtype == expected.dtype == np.float32
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)
    assert reference["pixel_attention_mask"][0].all()  # one image: no padding views
    processing = SplitProcessing.from_preprocessor(record, 16, "test")
    split = grid(image.width, image.height, processing)
    assert (split.rows, split.columns) == (reference["rows"][0][0], reference["cols"][0][0])


@pytest.mark.parametrize("name", ["blue_circle", "wide"])
def test_pixel_values_equal_at_smolvlm_256m_s_own_sizes(name):
    image = image_named(name)
    ours = preprocess(image, SplitProcessing.from_preprocessor(SMOLVLM, 64, "smolvlm"))
    expected = reference_processor(SMOLVLM)(image, return_tensors="np")["pixel_values"][0]
    assert ours.shape == expected.shape == (13 if name == "blue_circle" else 9, 3, 512, 512)
    np.testing.assert_array_equal(ours, expected)


def test_a_batch_of_images_with_different_grids_pads_as_transformers_does(tiny):
    _, _, vision = tiny
    images = [image_named("wide"), image_named("red_square")]  # 1 × 2 + 1 and 2 × 2 + 1 views
    ours = Idefics3Reader().forward_inputs(vision, images, tokens=None)  # type: ignore[arg-type]
    reference = reference_processor(TINY_PREPROCESSOR)(
        [[images[0]], [images[1]]], return_tensors="np"
    )
    assert ours["pixel_values"].shape == (2, 5, 3, 32, 32)
    np.testing.assert_array_equal(ours["pixel_values"].numpy(), reference["pixel_values"])
    np.testing.assert_array_equal(
        ours["pixel_attention_mask"].numpy(), reference["pixel_attention_mask"]
    )
    assert ours["pixel_attention_mask"][0, 3:].sum() == 0 and ours["pixel_attention_mask"][1].all()


def expanded(tokenizer, vision, text, image):
    """Our prompt ids: the text around the placeholder tokenised apart, the image's tokens
    between (as headlab's image prompts are, less the BOS)."""
    before, after = text.split("<image>")
    return [
        *tokenizer.encode(before, add_special_tokens=False),
        *Idefics3Reader().image_tokens(vision, image),
        *tokenizer.encode(after, add_special_tokens=False),
    ]


@pytest.mark.parametrize("record", [TINY_PREPROCESSOR, NO_SPLITTING], ids=["tiny", "no-split"])
@pytest.mark.parametrize("name", NAMES)
def test_prompt_tokens_equal_idefics3_processor(tiny, name, record):
    _, tokenizer, vision = tiny
    processing = SplitProcessing.from_preprocessor(record, 16, "test")
    vision = replace(vision, processing=replace(processing, tokens=vision.processing.tokens))
    text = "look at <image> what is the color of the thing ?"
    image = image_named(name)
    reference = reference_processor(record, tokenizer)(images=[image], text=[text])
    assert expanded(tokenizer, vision, text, image) == reference["input_ids"][0]


def newline_tokenizer():
    """A byte-level BPE tokenizer in which "\\n" and "\\n\\n" are tokens of their own (as in
    SmolVLM's), with the Idefics3 image tokens added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ["look at the cat\n\nwhat is it ?\nthe color is red\n\n"] * 20
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens()})
    return tokenizer


@pytest.mark.parametrize("name", ["red_square", "wide", "tall", "small"])
def test_rows_are_separated_by_newline_tokens_as_the_processor_does(tiny, name):
    _, _, vision = tiny
    tokenizer = newline_tokenizer()
    assert len(tokenizer.encode("\n\n", add_special_tokens=False)) == 1
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    inputs = idefics3_tokens(replace(vision, image_token_id=image_token), tokenizer, "bpe")
    text = "look at <image> what is the color ?"
    image = image_named(name)
    reference = reference_processor(TINY_PREPROCESSOR, tokenizer)(images=[image], text=[text])
    ours = expanded(tokenizer, inputs, text, image)
    assert ours == reference["input_ids"][0]
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]
    split = grid(image.width, image.height, inputs.processing)
    assert ours.count(newline) == max(split.rows - 1, 0)


def test_image_token_count_is_views_times_image_seq_len(tiny):
    _, _, vision = tiny
    reader = Idefics3Reader()
    for name, views in [("red_square", 5), ("wide", 3), ("tall", 3), ("small", 5)]:
        tokens = reader.image_tokens(vision, image_named(name))
        assert tokens.count(vision.image_token_id) == 16 * views, name
    tiny_image = reader.image_tokens(vision, Image.new("RGB", (4, 4)))  # upscaled to 64: 2 × 2
    assert tiny_image.count(vision.image_token_id) == 80


def test_token_boxes_of_a_wide_image_are_its_crops_then_the_global_view(tiny):
    _, _, vision = tiny
    boxes = Idefics3Reader().token_boxes(vision, 97, 30)  # 64 × 20 → 64 × 32: 1 row, 2 crops
    assert len(boxes) == 3 * 16
    assert [b.view for b in boxes[::16]] == ["crop 1,1", "crop 1,2", "global"]
    left, right, whole = boxes[:16], boxes[16:32], boxes[32:]
    assert (left[0].x0, left[0].y0, left[0].x1, left[0].y1) == (0, 0, 0.125, 0.25)
    assert (left[-1].x1, left[-1].y1) == (0.5, 1.0) and (right[0].x0, right[-1].x1) == (0.5, 1.0)
    assert (whole[5].x0, whole[5].y0, whole[5].x1, whole[5].y1) == (0.25, 0.25, 0.5, 0.5)
    for view in (left, right, whole):  # each view's cells tile its part of the image once
        area = sum((b.x1 - b.x0) * (b.y1 - b.y0) for b in view)
        assert area == pytest.approx(0.5 if view is not whole else 1.0)


def test_checkpoint_preprocessor_configs_are_read_and_checked():
    processing = SplitProcessing.from_preprocessor(SMOLVLM, 64, "smolvlm")
    assert (processing.longest_edge, processing.crop_size, processing.resample) == (
        2048,
        512,
        "lanczos",
    )
    with pytest.raises(VisionModelError, match=r"smolvlm: .*skips \['do_resize'\]"):
        SplitProcessing.from_preprocessor({**SMOLVLM, "do_resize": False}, 64, "smolvlm")
    with pytest.raises(VisionModelError, match=r"smolvlm: .*size=\{'height': 3"):
        SplitProcessing.from_preprocessor({**SMOLVLM, "size": {"height": 3}}, 64, "smolvlm")


def test_a_tokenizer_without_the_image_tags_is_refused_naming_the_model(tiny):
    from probes.models.tiny import word_tokenizer

    _, _, vision = tiny
    with pytest.raises(VisionModelError, match=r"^my-vlm: its tokenizer lacks .*<fake_token"):
        idefics3_tokens(vision, word_tokenizer(), "my-vlm")


def test_a_preprocessor_the_model_cannot_follow_is_refused_naming_the_model(tiny):
    from probes.models.vision_idefics3 import idefics3_inputs

    config = tiny[0].config
    assert idefics3_inputs(config, None, "m").processing.longest_edge == 4 * 32  # as SmolVLM's
    with pytest.raises(VisionModelError, match=r"^m: max_image_size 64 is not .* image_size 32"):
        idefics3_inputs(config, {**TINY_PREPROCESSOR, "max_image_size": {"longest_edge": 64}}, "m")
    with pytest.raises(VisionModelError, match=r"^m: size longest_edge 224 makes more than 6"):
        idefics3_inputs(config, {**TINY_PREPROCESSOR, "size": {"longest_edge": 224}}, "m")
    assert idefics3_inputs(config, {**TINY_PREPROCESSOR, "size": {"longest_edge": 192}}, "m")


@pytest.mark.parametrize("name", ["red_square", "wide", "tall"])
def test_prompt_tokens_equal_the_processor_s_at_smolvlm_256m_s_sizes(tiny, name):
    """SmolVLM-256M's config (a 512-pixel tower of 16-pixel patches, scale factor 4: 64 tokens
    a view) and preprocessor (longest edge 2048), without building its model."""
    from transformers import Idefics3Config

    from probes.models.vision_idefics3 import idefics3_inputs

    _, tokenizer, _ = tiny
    config = Idefics3Config(  # type: ignore[call-arg]
        vision_config={"image_size": 512, "patch_size": 16, "hidden_size": 768},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer)},
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=4,
    )
    vision = idefics3_tokens(idefics3_inputs(config, SMOLVLM, "smolvlm"), tokenizer, "smolvlm")
    assert vision.processing.image_seq_len == 64
    text = "look at <image> what is it ?"
    image = image_named(name)
    reference = reference_processor(SMOLVLM, tokenizer, image_seq_len=64)
    expected = reference(images=[image], text=[text])["input_ids"][0]
    assert expanded(tokenizer, vision, text, image) == expected
    views = {"red_square": 4 * 3 + 1, "wide": 4 * 2 + 1, "tall": 1 * 4 + 1}[name]
    assert expected.count(vision.image_token_id) == 64 * views
