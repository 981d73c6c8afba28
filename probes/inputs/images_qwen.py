"""Qwen2.5-VL's images: Qwen2-VL's preprocessing, step by step as transformers'
Qwen2VLImageProcessor takes them (its PIL backend), the prompt's image tokens and their boxes.

An image is resized (`smart_resize`) to h × w, both multiples of patch · merge (28), keeping
its aspect and pixel count within [min_pixels, max_pixels]; cut into (h/14) × (w/14) patches,
each flattened with its channel, temporal (a still image repeats its one frame
`temporal_patch_size` times) and pixel axes, ordered merge group by merge group so that each
2 × 2 group becomes one `<|image_pad|>` token. In the prompt the image is `<|vision_start|>`,
grid_h · grid_w / merge² image tokens, `<|vision_end|>` (the chat template's wrapping, which
the processor expands); the model also needs `image_grid_thw` per image and, for its 3-D
mRoPE positions, `mm_token_type_ids` (1 at image tokens).

Geometry: the resize stretches the whole image (no crop), so merged token (r, c) of a
H × W merged grid covers the fractions [c/W, (c+1)/W] × [r/H, (r+1)/H] of the original image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from probes.inputs.pixels import RESAMPLE, PatchBox, rescale_normalise, rgb
from probes.models.vision import VisionInputs, VisionModelError
from probes.models.vision_qwen import QwenProcessing

MAX_ASPECT = 200  # smart_resize refuses images more elongated than this


def smart_resize(height: int, width: int, processing: QwenProcessing) -> tuple[int, int]:
    """(height, width) both multiples of patch · merge, the pixel count within [min_pixels,
    max_pixels], the aspect kept as nearly as the rounding allows (Qwen2-VL's smart_resize)."""
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise VisionModelError(
            f"an image of {width} × {height} pixels is more elongated than Qwen2-VL reads "
            f"(aspect ratio at most {MAX_ASPECT})"
        )
    factor = processing.factor
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > processing.max_pixels:
        beta = math.sqrt(height * width / processing.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < processing.min_pixels:
        beta = math.sqrt(processing.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patch_grid(width: int, height: int, processing: QwenProcessing) -> tuple[int, int]:
    """(grid_h, grid_w): the image's patches down and across after the resize."""
    resized_h, resized_w = smart_resize(height, width, processing)
    return resized_h // processing.patch_size, resized_w // processing.patch_size


def preprocess(
    image: Image.Image, processing: QwenProcessing
) -> tuple[Float[np.ndarray, "patches dim"], tuple[int, int, int]]:
    """One image's flattened patches, [grid_h · grid_w, 3 · temporal · patch²] float32, and
    its (grid_t, grid_h, grid_w)."""
    image = rgb(image)
    resized_h, resized_w = smart_resize(image.height, image.width, processing)
    resized = np.asarray(image.resize((resized_w, resized_h), RESAMPLE[processing.resample]))
    pixels = rescale_normalise(resized, processing.rescale_factor, processing.mean, processing.std)
    patch, merge, temporal = (
        processing.patch_size,
        processing.merge_size,
        processing.temporal_patch_size,
    )
    grid_h, grid_w = resized_h // patch, resized_w // patch
    channels = pixels.shape[0]
    # [C, H, W] → [C, gh/m, m, p, gw/m, m, p] → [gh/m, gw/m, m, m, C, p, p]: merge groups first.
    grouped = pixels.reshape(channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    grouped = grouped.transpose(1, 4, 2, 5, 0, 3, 6)
    frames = np.repeat(grouped[:, :, :, :, :, None], temporal, axis=5)  # one frame, repeated
    flat = frames.reshape(grid_h * grid_w, channels * temporal * patch * patch)
    return np.ascontiguousarray(flat, dtype=np.float32), (1, grid_h, grid_w)


def _processing(vision: VisionInputs) -> QwenProcessing:
    if not isinstance(vision.processing, QwenProcessing):
        raise VisionModelError(
            f"architecture {vision.architecture!r} has no Qwen2-VL preprocessing "
            f"({type(vision.processing).__name__})"
        )
    return vision.processing


class QwenReader:
    """Qwen2.5-VL: an image's token count follows its size (dynamic resolution)."""

    def image_tokens(self, vision: VisionInputs, image: Image.Image) -> list[int]:
        processing = _processing(vision)
        grid_h, grid_w = patch_grid(image.width, image.height, processing)
        n_tokens = grid_h * grid_w // processing.merge_size**2
        return [
            processing.start_token_id,
            *[vision.image_token_id] * n_tokens,
            *self.closing_tokens(vision),
        ]

    def closing_tokens(self, vision: VisionInputs) -> tuple[int, ...]:
        """<|vision_end|>."""
        return (_processing(vision).end_token_id,)

    def forward_inputs(
        self, vision: VisionInputs, images: Sequence[Image.Image], tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """pixel_values (every image's patches, concatenated), image_grid_thw, and
        mm_token_type_ids for the whole batch (rows without an image are all text)."""
        processing = _processing(vision)
        prepared = [preprocess(image, processing) for image in images]
        return {
            "pixel_values": torch.from_numpy(np.concatenate([p for p, _ in prepared])),
            "image_grid_thw": torch.tensor([grid for _, grid in prepared], dtype=torch.long),
            "mm_token_type_ids": (tokens == vision.image_token_id).to(torch.int),
        }

    def token_boxes(self, vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
        """Each image token's merged cell, row by row, as fractions of the original image."""
        processing = _processing(vision)
        grid_h, grid_w = patch_grid(width, height, processing)
        rows, columns = grid_h // processing.merge_size, grid_w // processing.merge_size
        return [
            PatchBox(column / columns, row / rows, (column + 1) / columns, (row + 1) / rows)
            for row in range(rows)
            for column in range(columns)
        ]
