"""Image prompts for vision-language models: placeholders, pixel values without torchvision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from probes.inputs.segments import Layout, SegmentError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # transformers.image_utils.OPENAI_CLIP_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePrompt:
    id: str
    text: str  # holds the placeholder exactly once
    image: Image.Image


@dataclass(frozen=True)
class ImageInputs:
    """How a model reads images: the token standing for one patch, how many of them an image
    becomes, and the square size and per-channel statistics its vision tower expects."""

    image_token_id: int
    n_image_tokens: int
    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    placeholder: str = "<image>"

    @classmethod
    def llava(cls, config: Any) -> ImageInputs:
        """From a LlavaConfig: (image_size / patch_size)² patches, plus CLS if the strategy is
        "full" (LLaVA's "default" drops it)."""
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        extra = int(config.vision_feature_select_strategy == "full")
        return cls(config.image_token_id, patches + extra, vision.image_size)


def pixel_values(
    image: Image.Image, inputs: ImageInputs
) -> Float[torch.Tensor, "1 channel height width"]:
    """RGB, bicubic resize to image_size², scale to [0, 1], normalise per channel."""
    size = inputs.image_size
    array = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    scaled = array.astype(np.float32) / 255.0
    normalised = (scaled - np.array(inputs.mean, np.float32)) / np.array(inputs.std, np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1)[None].contiguous()


def image_layout(model, prompt: ImagePrompt, inputs: ImageInputs, answer_tokens: int) -> Layout:
    """Token ids with the placeholder expanded to the image tokens, and without the image."""
    if prompt.text.count(inputs.placeholder) != 1:
        raise SegmentError(
            f"image prompt {prompt.id!r}: expected the placeholder {inputs.placeholder!r} once, "
            f"found it {prompt.text.count(inputs.placeholder)} times"
        )
    before, after = prompt.text.split(inputs.placeholder)
    prefix = model.tokenize(before)
    suffix = model.tokenize(after, prepend_bos=False)
    if not suffix:
        raise SegmentError(f"image prompt {prompt.id!r}: no text follows the image to score")
    image = [inputs.image_token_id] * inputs.n_image_tokens
    return Layout(
        prompt.id,
        tuple(prefix + image + suffix),
        tuple(prefix + suffix),
        min(answer_tokens, len(suffix)),
    )
