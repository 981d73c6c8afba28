"""Head divergence for vision-language models: the segment is the image (the VHD paper's case).

Each prompt's text holds one image placeholder; "with" expands it to the model's image tokens and
passes `pixel_values`, "without" drops both. The two variants run one at a time through the
same `DivergenceProbe` hooks (language-model `blocks.L.attn.hook_z`), so the rows have the text
path's schema. `pixel_values` are built here with PIL and numpy (CLIP's resize and normalise):
transformers' image processors need torchvision, which does not import beside this CPU torch.
Tested on random-weight LLaVA built from a config; a real LLaVA checkpoint runs the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from PIL import Image

from probes.base import Batch
from probes.divergence import DivergenceProbe, Layout, SegmentError

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


def run_images(
    model, probe: DivergenceProbe, prompts: Sequence[ImagePrompt], inputs: ImageInputs
) -> pd.DataFrame:
    """VHD and T-VHD of every language-model head, image present vs absent, as tidy rows."""
    bridge = model.bridge
    for prompt in prompts:
        layout = image_layout(model, prompt, inputs, probe.params.answer_tokens)
        for variant, tokens in (("with", layout.with_segment), ("without", layout.without_segment)):
            engine_id = f"{prompt.id}#{variant}"
            probe.variants[engine_id] = (layout, variant)
            ids = torch.tensor([tokens], device=model.device)
            batch = Batch(ids, torch.tensor([len(tokens)], device=model.device), (engine_id,))
            extra = {}
            if variant == "with":
                extra["pixel_values"] = pixel_values(prompt.image, inputs).to(model.device)
            with torch.inference_mode(), bridge.hooks(fwd_hooks=probe.hooks(batch)):
                bridge(ids, return_type=None, **extra)
    return pd.DataFrame(probe.rows()).assign(probe=probe.name)
