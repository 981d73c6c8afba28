"""LLaVA's images: CLIP's preprocessing, step by step as transformers' CLIPImageProcessor takes
them (its PIL backend), a fixed number of image tokens, and their boxes.

Geometry of a LLaVA image token: resize the short edge, center-crop a square, cut it into a grid
of patches; the grid covers only the cropped middle of a wide or tall image. With the "full"
feature strategy the first token is CLS, which covers no one patch (no box).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from probes.inputs.pixels import (
    RESAMPLE,
    PatchBox,
    center_crop,
    rescale_normalise,
    rgb,
    shortest_edge_size,
)
from probes.models.vision import ImageProcessing, VisionInputs


def preprocess(image: Image.Image, processing: ImageProcessing) -> Float[np.ndarray, "3 h w"]:
    """One image's pixel values, [channel, height, width] float32."""
    image = rgb(image)
    size = shortest_edge_size(image.width, image.height, processing.shortest_edge)
    resized = np.asarray(image.resize(size, RESAMPLE[processing.resample]))
    cropped = center_crop(resized, processing.crop_height, processing.crop_width)
    return rescale_normalise(cropped, processing.rescale_factor, processing.mean, processing.std)


class ClipReader:
    """LLaVA (CLIP vision tower): every image is `n_image_tokens` copies of the image token."""

    def image_tokens(self, vision: VisionInputs, image: Image.Image) -> list[int]:
        assert vision.n_image_tokens is not None  # LLaVA's count is fixed by its config
        return [vision.image_token_id] * vision.n_image_tokens

    def forward_inputs(
        self, vision: VisionInputs, images: Sequence[Image.Image], tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        arrays = [preprocess(image, vision.processing) for image in images]
        return {"pixel_values": torch.from_numpy(np.stack(arrays))}

    def token_boxes(self, vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
        """A square grid of patches over CLIP's center crop, mapped back through the resize."""
        processing, n_tokens = vision.processing, vision.n_image_tokens
        if not isinstance(processing, ImageProcessing) or n_tokens is None:
            return []
        side = math.isqrt(n_tokens)
        extra = n_tokens - side * side  # CLS first, with the "full" strategy
        resized_w, resized_h = shortest_edge_size(width, height, processing.shortest_edge)
        # The crop's top left in resized pixels, as `center_crop` takes it (negative: padding).
        left = (resized_w - processing.crop_width) // 2
        top = (resized_h - processing.crop_height) // 2
        cell_w, cell_h = processing.crop_width / side, processing.crop_height / side
        boxes: list[PatchBox | None] = [None] * extra
        for row in range(side):
            for column in range(side):
                boxes.append(
                    PatchBox(
                        x0=(left + column * cell_w) / resized_w,
                        y0=(top + row * cell_h) / resized_h,
                        x1=(left + (column + 1) * cell_w) / resized_w,
                        y1=(top + (row + 1) * cell_h) / resized_h,
                    )
                )
        return boxes

    def closing_tokens(self, vision: VisionInputs) -> tuple[int, ...]:
        """None: the text follows the image's last token."""
        return ()
