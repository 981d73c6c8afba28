"""Pixel steps every architecture's image preprocessing shares, done with PIL and numpy as
transformers' image processors do them (their own need torchvision, which does not import beside
this CPU torch), and the box an image token covers in the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class PatchBox:
    """The part of the original image that one image token reads, as fractions of its width and
    height (0, 0 at the top left); `view` names which picture of it the token belongs to
    ("image" for a single grid; a crop or the global view for architectures that split)."""

    x0: float
    y0: float
    x1: float
    y1: float
    view: str = "image"


def read_image(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


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


def rescale_normalise(
    array: np.ndarray,
    rescale_factor: float,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """[H, W, C] uint8 → [C, H, W] float32: × rescale_factor, then (x − mean) / std per channel."""
    scaled = (array.astype(np.float64) * rescale_factor).astype(np.float32)
    return ((scaled - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
