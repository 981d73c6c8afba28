"""Image prompts for vision-language models: image tokens in place of the placeholder, and pixel
values prepared without torchvision (PIL + numpy, CLIP's steps exactly as transformers'
CLIPImageProcessor takes them in its PIL backend).

A prompt's text holds `<image>` once; its tokens are BOS + the text before it, the model's
`n_image_tokens` image tokens, then the text after it (each piece tokenised on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from probes.core.errors import ConfigError, PromptTooLongError
from probes.core.types import TokenizedPrompt
from probes.inputs.prompts import Prompt
from probes.inputs.segments import Layout, SegmentError
from probes.models import LoadedModel
from probes.models.vision import ImageProcessing, VisionInputs

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (transformers' convert_to_rgb)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def shortest_edge_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(width, height) with the short edge `shortest_edge` and the long edge int(s · long/short)."""
    if width <= height:
        return shortest_edge, int(shortest_edge * height / width)
    return int(shortest_edge * width / height), shortest_edge


def center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] cropped to height × width about the centre (top/left = (size − crop) // 2);
    an image smaller than the crop is zero-padded around it first, as transformers does."""
    rows, columns = array.shape[:2]
    if rows < height or columns < width:
        padded = np.zeros((max(rows, height), max(columns, width), array.shape[2]), array.dtype)
        top, left = -(-(padded.shape[0] - rows) // 2), -(-(padded.shape[1] - columns) // 2)
        padded[top : top + rows, left : left + columns] = array
        array, rows, columns = padded, padded.shape[0], padded.shape[1]
    top, left = (rows - height) // 2, (columns - width) // 2
    return array[top : top + height, left : left + width]


def preprocess(image: Image.Image, processing: ImageProcessing) -> Float[np.ndarray, "3 h w"]:
    """One image's pixel values, [channel, height, width] float32."""
    image = rgb(image)
    size = shortest_edge_size(image.width, image.height, processing.shortest_edge)
    resized = np.asarray(image.resize(size, RESAMPLE[processing.resample]))
    cropped = center_crop(resized, processing.crop_height, processing.crop_width)
    scaled = (cropped.astype(np.float64) * processing.rescale_factor).astype(np.float32)
    mean = np.array(processing.mean, dtype=np.float32)
    std = np.array(processing.std, dtype=np.float32)
    return ((scaled - mean) / std).transpose(2, 0, 1)


def read_image(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def pixel_values(
    images: Sequence[str | Path | Image.Image], vision: VisionInputs
) -> Float[torch.Tensor, "image 3 height width"]:
    """The pixel values of several images (files or PIL images), stacked in order."""
    arrays = [
        preprocess(
            image if isinstance(image, Image.Image) else read_image(image), vision.processing
        )
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays))


def vision_of(model: LoadedModel) -> VisionInputs:
    """How `model` reads images; a text model is refused, naming it."""
    if model.vision is None:
        raise ConfigError(
            f"model {model.info.name!r} is a text model and reads no images; give a "
            "vision-language model (e.g. tiny-random-llava) or text prompts"
        )
    return model.vision


def split_image_prompt(
    model: LoadedModel, prompt: Prompt, where: str
) -> tuple[list[int], list[int], list[int]]:
    """Token ids before the image (BOS first), the image tokens, and after the image."""
    vision = vision_of(model)
    if prompt.text.count(vision.placeholder) != 1:
        raise SegmentError(
            f"{where}: expected the image placeholder {vision.placeholder!r} once, found it "
            f"{prompt.text.count(vision.placeholder)} times"
        )
    before, after = prompt.text.split(vision.placeholder)
    image = [vision.image_token_id] * vision.n_image_tokens
    return model.tokenize(before), image, model.tokenize(after, prepend_bos=False)


def tokenize_image_prompt(
    model: LoadedModel, prompt: Prompt, max_tokens: int | None, where: str
) -> TokenizedPrompt:
    """An image prompt's tokens, the text after the image cut to `max_tokens` in all; a limit
    that would cut into the image is refused (the image tokens must all be there)."""
    before, image, after = split_image_prompt(model, prompt, where)
    limit = min(max_tokens or model.info.n_ctx, model.info.n_ctx)
    if len(before) + len(image) >= limit:
        raise PromptTooLongError(
            f"{where}: its text before the image and the image take {len(before) + len(image)} "
            f"tokens ({len(image)} image tokens), which leaves none of the {limit} allowed "
            "(max_tokens, the model's context) for the text after it; raise max_tokens"
        )
    tokens = before + image + after[: limit - len(before) - len(image)]
    return TokenizedPrompt(prompt.id, tuple(tokens), str(prompt.image))


def image_layout(
    model: LoadedModel, prompt: Prompt, answer_tokens: int, max_tokens: int | None, where: str
) -> Layout:
    """An image prompt with its image (the segment) and without it: the image tokens dropped."""
    tokenized = tokenize_image_prompt(model, prompt, max_tokens, where)
    before, image, _ = split_image_prompt(model, prompt, where)
    after = list(tokenized.tokens[len(before) + len(image) :])
    if not after:
        raise SegmentError(f"{where}: no text follows the image to score")
    return Layout(
        prompt.id,
        tokenized.tokens,
        tuple(before + after),
        min(answer_tokens, len(after)),
    )


def image_kwargs(model: LoadedModel, images: Sequence[str | None]) -> dict[str, torch.Tensor]:
    """The forward pass's keyword arguments for a batch's images (rows without one add none)."""
    files = [image for image in images if image is not None]
    if not files:
        return {}
    values = pixel_values(files, vision_of(model))
    return {"pixel_values": values.to(device=model.device, dtype=model_dtype(model))}


def model_dtype(model: LoadedModel) -> torch.dtype:
    return next(model.bridge.parameters()).dtype
