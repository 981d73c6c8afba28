"""Image prompt files and pixel preprocessing (torch-free parts, and CLIP's steps exactly)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from probes.inputs.images_clip import preprocess
from probes.inputs.pixels import read_image
from probes.inputs.prompts import PromptFileError, load_jsonl
from probes.models.vision import ImageProcessing, VisionModelError

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "data" / "prompts" / "images"


def clip_reference(image, shortest_edge, crop):
    """transformers' own CLIPImageProcessor (its PIL backend: no torchvision)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop}
    )
    return processor(image, return_tensors="np")["pixel_values"][0]


def odd_images():
    transparent = Image.new("RGBA", (30, 50), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((5, 5, 25, 40), fill=(200, 40, 90, 128))
    grey = Image.new("L", (90, 33), 77)
    return {"transparent": transparent, "grey": grey, "small": Image.new("RGB", (9, 7), "red")}


@pytest.mark.parametrize("size", [56, 336])  # tiny-random-llava's and llava-1.5's
@pytest.mark.parametrize(
    "name", ["red_square", "blue_circle", "green_stripes", "blank", *odd_images()]
)
def test_preprocessing_equals_clip_image_processor(name, size):
    image = odd_images()[name] if name in odd_images() else read_image(IMAGES / f"{name}.png")
    ours = preprocess(image, ImageProcessing.clip(size))
    reference = clip_reference(image, size, size)
    assert ours.shape == reference.shape == (3, size, size)
    assert ours.dtype == reference.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)


def test_a_crop_larger_than_the_resized_image_is_zero_padded_as_transformers_does():
    image = read_image(IMAGES / "blue_circle.png")  # 48 × 64: shortest edge 20 → 20 × 26
    ours = preprocess(image, ImageProcessing(20, 32, 32))
    np.testing.assert_array_equal(ours, clip_reference(image, 20, 32))


def test_preprocessor_config_of_a_checkpoint_is_read_and_checked():
    record = {
        "crop_size": {"height": 336, "width": 336},
        "size": {"shortest_edge": 336},
        "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    assert ImageProcessing.from_preprocessor(record, "llava") == ImageProcessing.clip(336)
    with pytest.raises(VisionModelError, match="skips"):
        ImageProcessing.from_preprocessor({**record, "do_center_crop": False}, "llava")


def test_the_committed_image_prompts_load():
    suite = load_jsonl(IMAGES / "images.jsonl")
    assert suite.has_images and len(suite) == 3
    assert all(p.image.is_file() and p.text.count("<image>") == 1 for p in suite.prompts)
    assert suite.prompts[0].image == IMAGES / "red_square.png"  # relative to the JSONL's folder


def test_an_image_prompt_suite_hashes_its_images(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    line = json.dumps({"id": "a", "text": "look <image> here", "image": "a.png"})
    (tmp_path / "p.jsonl").write_text(line + "\n")
    before = load_jsonl(tmp_path / "p.jsonl").sha256
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "a.png")
    assert load_jsonl(tmp_path / "p.jsonl").sha256 != before


def bad_line(tmp_path, record, second=None):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    (tmp_path / "notes.png").write_text("not really an image")
    (tmp_path / "folder").mkdir(exist_ok=True)
    first = {"id": "ok", "text": "fine <image> text", "image": "ok.png"}
    lines = [first, record] if second is None else [record, second]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"text": "a <image> b", "image": "missing.png"},
            r"image file .*missing.png does not exist",
        ),
        ({"text": "a <image> b", "image": "notes.png"}, r"notes.png is not an image PIL can read"),
        ({"text": "a <image> b", "image": "folder"}, r"folder is a directory"),
        ({"text": "no placeholder", "image": "ok.png"}, r"exactly once .* holds it 0 times"),
        ({"text": "<image> twice <image>", "image": "ok.png"}, r"exactly once .* holds it 2 times"),
        ({"text": "a <image> b", "image": 7}, r'"image" must be the path of an image file'),
        ({"text": "just text"}, r"a text prompt, but .*:1 is an image prompt"),
    ],
)
def test_bad_image_prompts_are_one_error_naming_file_and_line(tmp_path, record, message):
    path = bad_line(tmp_path, record)
    with pytest.raises(PromptFileError, match=rf"^{path}:2: .*{message}") as caught:
        load_jsonl(path)
    assert "\n" not in str(caught.value)
