"""Image prompts for vision-language models: the tokens an image becomes in place of the
placeholder, and the forward pass's image inputs, by architecture (an `ImageReader` each; pixels
are prepared without torchvision, with PIL and numpy: probes/inputs/pixels.py).

A prompt's text holds `<image>` once; its tokens are BOS + the text before it, the image's tokens
(what they are depends on the architecture and, for some, on the image's size), then the text
after it (each piece tokenised on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from jaxtyping import Bool, Int
from PIL import Image

from probes.core.errors import ConfigError, PromptTooLongError
from probes.core.types import TokenizedPrompt
from probes.inputs.images_clip import ClipReader
from probes.inputs.images_idefics3 import Idefics3Reader
from probes.inputs.images_qwen import QwenReader
from probes.inputs.pixels import PatchBox, read_image
from probes.inputs.prompts import Prompt
from probes.inputs.segments import Layout, SegmentError
from probes.models import LoadedModel
from probes.models.vision import VisionInputs, VisionModelError


class ImageReader(Protocol):
    """How one architecture reads an image: the token ids it stands for in the prompt, the
    forward pass's keyword arguments for a batch of images, and each image token's box in the
    original image (empty when headlab knows no geometry for it), and the marker tokens that
    close an image after its last image token (none for LLaVA), which are not text."""

    def image_tokens(self, vision: VisionInputs, image: Image.Image) -> list[int]: ...

    def forward_inputs(
        self, vision: VisionInputs, images: Sequence[Image.Image], tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]: ...

    def token_boxes(
        self, vision: VisionInputs, width: int, height: int
    ) -> list[PatchBox | None]: ...

    def closing_tokens(self, vision: VisionInputs) -> tuple[int, ...]: ...


# By `VisionInputs.architecture`; a new architecture adds its reader here.
READERS: dict[str, ImageReader] = {
    "llava": ClipReader(),
    "idefics3": Idefics3Reader(),
    "qwen2_5_vl": QwenReader(),
}


def reader_of(vision: VisionInputs) -> ImageReader:
    if vision.architecture not in READERS:
        raise VisionModelError(
            f"headlab reads no images for architecture {vision.architecture!r} "
            f"(it does for {', '.join(sorted(READERS))})"
        )
    return READERS[vision.architecture]


def patch_boxes(vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
    """One entry per image token of an image this size, in token order: its box, or None for a
    token that covers no one region (CLS). Empty when headlab knows no geometry for it."""
    return reader_of(vision).token_boxes(vision, width, height)


def text_after_image(
    vision: VisionInputs,
    tokens: Int[torch.Tensor, "batch pos"],
    lengths: Int[torch.Tensor, " batch"],
) -> tuple[Bool[torch.Tensor, "batch pos"], Bool[torch.Tensor, "batch pos"]]:
    """[batch, pos] masks: the image's tokens, and the text queries after the image: the real
    positions past its last token and the marker(s) closing it right there (Qwen's
    <|vision_end|>, Idefics3's last <fake_token_around_image>); none in a row without an image.
    VisAttnSink's text queries likewise start where the image's segment ends."""
    is_image = tokens.eq(vision.image_token_id)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    start = torch.where(is_image, positions + 1, 0).amax(dim=1)  # 0: a row without an image
    last = tokens.shape[1] - 1
    for marker in reader_of(vision).closing_tokens(vision):
        following = tokens.gather(1, start.clamp(max=last)[:, None])[:, 0]
        start += (start > 0) & (start <= last) & following.eq(marker)
    after = (positions[None, :] >= start[:, None]) & (positions[None, :] < lengths[:, None])
    return is_image, after & (start[:, None] > 0)


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
    if prompt.image is None:
        raise SegmentError(f"{where}: an image prompt needs an image file")
    before, after = prompt.text.split(vision.placeholder)
    image = reader_of(vision).image_tokens(vision, read_image(str(prompt.image)))
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


def image_kwargs(
    model: LoadedModel, images: Sequence[str | None], tokens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The forward pass's keyword arguments for a batch's images (rows without one add none),
    on the model's device, floating ones in its dtype. `tokens` are the batch's [batch, pos]."""
    files = [image for image in images if image is not None]
    if not files:
        return {}
    vision = vision_of(model)
    inputs = reader_of(vision).forward_inputs(vision, [read_image(f) for f in files], tokens)
    dtype = model_dtype(model)
    return {
        name: value.to(model.device, dtype if value.is_floating_point() else value.dtype)
        for name, value in inputs.items()
    }


def prompt_image_inputs(
    model: LoadedModel, image: str | Path, tokens: Sequence[int]
) -> dict[str, torch.Tensor]:
    """The forward inputs of one image prompt whose token ids are `tokens` (a generation's
    prefill, say): `image_kwargs` for a batch of one."""
    return image_kwargs(model, [str(image)], torch.tensor([list(tokens)], device=model.device))


def model_dtype(model: LoadedModel) -> torch.dtype:
    return next(model.bridge.parameters()).dtype
