"""Idefics3's images (SmolVLM): resized, split into a grid of crops plus a global view, step by
step as transformers' Idefics3ImageProcessor takes them (its PIL path), and the tokens and boxes
of each view.

Every resize goes through PIL on uint8 pixels, as transformers' PIL backend does: the longest
edge to `longest_edge`, then (splitting) each side up to a multiple of `crop_size`; the crops are
cut from that, and the global view is that image resized to `crop_size` × `crop_size`.

Geometry of an image token: a view's `image_seq_len` tokens are a square grid over it in row
order (the connector's pixel shuffle joins scale × scale neighbouring patches into one token);
a crop is one cell of the resized image's grid, which stretches the whole original image, so a
box in the resized image is the same fraction of the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from probes.inputs.pixels import RESAMPLE, PatchBox, rescale_normalise, rgb
from probes.models.vision import VisionInputs
from probes.models.vision_idefics3 import SplitProcessing

MAX_IMAGE_SIZE = 4096  # transformers' absolute cap on the resized longest edge


@dataclass(frozen=True)
class Grid:
    """An image's split: `rows` × `columns` crops (0 × 0: the global view only) of the resized
    image `width` × `height`."""

    rows: int
    columns: int
    width: int
    height: int


def longest_edge_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """(width, height) with the longest edge `longest_edge`, the other int(·) of it rounded up to
    even, then both scaled under MAX_IMAGE_SIZE (Idefics3's get_resize_output_image_size)."""
    aspect = width / height
    if width >= height:
        width, height = longest_edge, int(longest_edge / aspect)
        height += height % 2
    else:
        width, height = int(longest_edge * aspect), longest_edge
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        width, height = int(MAX_IMAGE_SIZE * aspect), MAX_IMAGE_SIZE
    return max(width, 1), max(height, 1)


def multiple_size(width: int, height: int, crop: int) -> tuple[int, int]:
    """Each side rounded up to a multiple of `crop`, the short one after an int(·) through the
    aspect ratio (Idefics3's resize_for_vision_encoder)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / crop) * crop
        height = math.ceil(int(width / aspect) / crop) * crop
    else:
        height = math.ceil(height / crop) * crop
        width = math.ceil(int(height * aspect) / crop) * crop
    return width, height


def grid(width: int, height: int, processing: SplitProcessing) -> Grid:
    """How an image of this size is split."""
    width, height = longest_edge_size(width, height, processing.longest_edge)
    if not processing.do_image_splitting:
        return Grid(0, 0, width, height)
    width, height = multiple_size(width, height, processing.crop_size)
    crop = processing.crop_size
    if width > crop or height > crop:
        return Grid(height // crop, width // crop, width, height)
    return Grid(0, 0, width, height)


def views(image: Image.Image, processing: SplitProcessing) -> list[Image.Image]:
    """The image's crops row by row, then its global view, each `crop_size` square (RGB)."""
    image = rgb(image)
    split = grid(image.width, image.height, processing)
    resample = RESAMPLE[processing.resample]
    crop = processing.crop_size
    resized = image.resize(
        longest_edge_size(image.width, image.height, processing.longest_edge), resample
    )
    if processing.do_image_splitting:
        resized = resized.resize((split.width, split.height), resample)
    crops = [
        resized.crop((c * crop, r * crop, (c + 1) * crop, (r + 1) * crop))
        for r in range(split.rows)
        for c in range(split.columns)
    ]
    return [*crops, resized.resize((crop, crop), resample)]


def preprocess(image: Image.Image, processing: SplitProcessing) -> Float[np.ndarray, "view 3 h w"]:
    """One image's views' pixel values, float32."""
    arrays = [
        rescale_normalise(
            np.asarray(view), processing.rescale_factor, processing.mean, processing.std
        )
        for view in views(image, processing)
    ]
    return np.stack(arrays)


def processing_of(vision: VisionInputs) -> SplitProcessing:
    assert isinstance(vision.processing, SplitProcessing)  # READERS maps idefics3 here
    return vision.processing


class Idefics3Reader:
    """Idefics3: an image is its crops' and global view's image tokens, each view wrapped in
    `<fake_token_around_image>` and its tag (transformers' Idefics3Processor's expansion)."""

    def image_tokens(self, vision: VisionInputs, image: Image.Image) -> list[int]:
        processing = processing_of(vision)
        ids = processing.tokens
        assert ids is not None  # filled from the tokenizer when the model loads
        split = grid(image.width, image.height, processing)
        view = [vision.image_token_id] * processing.image_seq_len
        tokens: list[int] = []
        for r in range(split.rows):
            for c in range(split.columns):
                tokens += [ids.fake, ids.row_col[(r + 1, c + 1)], *view]
            # "\n" after each row; the last one joins the "\n" before the global view.
            tokens += ids.newline if r < split.rows - 1 else ids.double_newline
        return [*tokens, ids.fake, ids.global_tag, *view, *self.closing_tokens(vision)]

    def closing_tokens(self, vision: VisionInputs) -> tuple[int, ...]:
        """The <fake_token_around_image> after the global view."""
        ids = processing_of(vision).tokens
        assert ids is not None  # filled from the tokenizer when the model loads
        return (ids.fake,)

    def forward_inputs(
        self, vision: VisionInputs, images: Sequence[Image.Image], tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """pixel_values [image, view, 3, h, w] and pixel_attention_mask [image, view, h, w]; an
        image with fewer views is padded with all-zero ones (mask 0), as transformers does."""
        processing = processing_of(vision)
        arrays = [preprocess(image, processing) for image in images]
        side = processing.crop_size
        most = max(len(array) for array in arrays)
        pixels = np.zeros((len(arrays), most, 3, side, side), np.float32)
        mask = np.zeros((len(arrays), most, side, side), np.int64)
        for index, array in enumerate(arrays):
            pixels[index, : len(array)] = array
            mask[index, : len(array)] = 1
        return {
            "pixel_values": torch.from_numpy(pixels),
            "pixel_attention_mask": torch.from_numpy(mask),
        }

    def token_boxes(self, vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
        """Per image token, crops row by row then the global view: its cell of the view's
        square token grid, as a fraction of the original image."""
        processing = processing_of(vision)
        split = grid(width, height, processing)
        side = math.isqrt(processing.image_seq_len)
        boxes: list[PatchBox | None] = []
        cells = [
            (r, c, f"crop {r + 1},{c + 1}") for r in range(split.rows) for c in range(split.columns)
        ]
        for row, column, name in [*cells, (0, 0, "global")]:
            # The view's extent as fractions of the image (the global view: all of it).
            parts_x, parts_y = (split.columns, split.rows) if name != "global" else (1, 1)
            for i in range(side):
                for j in range(side):
                    boxes.append(
                        PatchBox(
                            x0=(column + j / side) / parts_x,
                            y0=(row + i / side) / parts_y,
                            x1=(column + (j + 1) / side) / parts_x,
                            y1=(row + (i + 1) / side) / parts_y,
                            view=name,
                        )
                    )
        return boxes
