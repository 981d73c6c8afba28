"""Where each image token of a prompt looks in its image: a box per token, for drawing attention
over the picture (the dashboard's vision page, `image_attention` probe).

A box is in the ORIGINAL image's coordinates, as fractions of its width and height (0, 0 at the
top left), so one drawing code serves every architecture, whatever it did to the pixels:
  LLaVA (CLIP)  resize the short edge, center-crop a square, cut it into a grid of patches; the
                grid covers only the cropped middle of a wide or tall image. With the "full"
                feature strategy the first token is CLS, which covers no one patch (no box).
An architecture headlab has no geometry for gets no boxes, and the page draws a bar per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from probes.inputs.images import shortest_edge_size
from probes.models.vision import VisionInputs


@dataclass(frozen=True)
class PatchBox:
    """The part of the original image that one image token reads, as fractions of its size;
    `view` names which picture of it the token belongs to ("image" for a single grid)."""

    x0: float
    y0: float
    x1: float
    y1: float
    view: str = "image"


def patch_boxes(vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
    """One entry per image token, in token order: its box, or None for a token that covers no
    one region (CLS). Empty when headlab knows no geometry for the architecture."""
    if vision.architecture == "llava":
        return _clip_grid(vision, width, height)
    return []


def _clip_grid(vision: VisionInputs, width: int, height: int) -> list[PatchBox | None]:
    """A square grid of patches over CLIP's center crop, mapped back through the resize."""
    side = math.isqrt(vision.n_image_tokens)
    extra = vision.n_image_tokens - side * side  # CLS first, with the "full" strategy
    processing = vision.processing
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
