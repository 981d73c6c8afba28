"""`image_attention`: how much each head of a vision-language model's language model reads the
image, and which parts of it: what the dashboard's vision page draws over the picture.

For an image prompt, the text queries are the real positions after the image's last token and
the marker closing it (Qwen's <|vision_end|>; `probes.inputs.images.text_after_image`): the
question and answer text, Q of them. Per layer, head and image token κ:

    A_img[l, h, κ] = (1/Q) Σ_{q text query} A_{l,h}[q, κ]

and per head, averaged over every image prompt, the share of a text query's attention that lands
anywhere on the image ("image_share" = Σ_κ A_img[l, h, κ]; 1 = the head reads only the image,
0 = never). A text model's prompts have no image, so the probe refuses them.

Storage: rows "image_share" per head; side table "image_attention" (schema.IMAGE_ATTENTION_TABLE),
one row per stored prompt, layer and head with `weights` (float16, one per image token, in token
order); side table "image_prompts", one row per stored prompt: the position of its first image
token, the image's width and height, a PNG thumbnail of at most THUMBNAIL pixels a side (and its
size), and per image token its box in the original image (from the architecture's reader in
probes/inputs/images.py; none for CLS; no boxes for an architecture without geometry). Only
the first `n_prompts` image prompts fed are stored: per prompt n_layers × n_heads × n_image
float16s (llava-1.5-7b: 32 × 32 × 576 × 2 B = 1.2 MB).

A StreamingProbe: each chunk of pattern rows is reduced to its image columns as it arrives.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probes.core import schema
from probes.core.errors import ConfigError
from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams
from probes.inputs.images import patch_boxes, text_after_image
from probes.inputs.pixels import read_image, rgb
from probes.models import LoadedModel
from probes.models.vision import VisionInputs

THUMBNAIL = 384  # stored pictures are at most this many pixels a side


@dataclass(frozen=True)
class ImageAttentionParams(ProbeParams):
    """How many image prompts keep their per-token attention (the first fed)."""

    n_prompts: int = 4

    def check(self) -> None:
        self.require(self.n_prompts >= 1, "n_prompts", "at least 1")


def thumbnail_png(path: str) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """A PNG of the image at most THUMBNAIL pixels a side, its size, and the original size."""
    image = rgb(read_image(path))
    size = image.size
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), image.size, size


@register_probe
class ImageAttentionProbe(StreamingProbe[ImageAttentionParams]):
    """Per head the share of text-query attention on the image, and for a few prompts the
    attention of each head to each image token (side tables); see the module docstring."""

    name = "image_attention"
    Params = ImageAttentionParams
    description = "how much each head reads the image, and attention per image patch"

    totals = totals_of(share_sum="sum", n_prompts_seen="sum", stored="dict")

    def __init__(self, info: ModelInfo, params: ImageAttentionParams | None = None) -> None:
        super().__init__(info, params)
        self.share_sum = torch.zeros(info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_prompts_seen = 0
        self.stored: dict[str, dict[str, Any]] = {}  # prompt id -> its image and weights
        self.vision: VisionInputs | None = None
        self._image: torch.Tensor | None = None  # [batch, pos] this batch's image tokens
        self._text: torch.Tensor | None = None  # [batch, pos] its text queries after the image
        self._mass: torch.Tensor | None = None  # [layer, batch, head, pos] summed text attention

    def bind(self, model: LoadedModel) -> None:
        if model.vision is None:
            raise ConfigError(
                f"probe image_attention reads image prompts; model {model.info.name!r} is a "
                "text model (give a vision-language model, e.g. tiny-random-llava)"
            )
        self.vision = model.vision

    def start_batch(self, batch: Batch) -> None:
        vision = self._batch_state(self.vision)
        if not batch.has_images:
            raise ConfigError(
                f"probe image_attention reads image prompts; prompt {batch.prompt_ids[0]!r} "
                "has no image"
            )
        self._image, self._text = text_after_image(vision, batch.tokens, batch.lengths)
        n_batch, n_positions = batch.tokens.shape
        self._mass = torch.zeros(
            self.info.n_layers, n_batch, self.info.n_heads, n_positions, dtype=torch.float32
        )

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        text = self._batch_state(self._text)[:, q_start : q_start + rows.shape[2]]
        mass = torch.einsum("bhqk,bq->bhk", rows.float(), text.to(rows.device, torch.float32))
        band = slice(k_start, k_start + mass.shape[-1])  # the keys these rows cover
        self._batch_state(self._mass)[layer, :, :, band] += mass.cpu()

    def end_batch(self, batch: Batch) -> None:
        image, text = self._batch_state(self._image).cpu(), self._batch_state(self._text).cpu()
        mass = self._batch_state(self._mass)
        for row, prompt_id in enumerate(batch.prompt_ids):
            n_text = int(text[row].sum())
            if n_text == 0:  # an image at the very end: no text query reads it
                continue
            per_token = mass[:, row][..., image[row]] / n_text  # [layer, head, image token]
            self.share_sum += per_token.double().sum(-1)
            self.n_prompts_seen += 1
            if len(self.stored) < self.params.n_prompts and prompt_id not in self.stored:
                start = int(image[row].nonzero()[0])
                self.stored[prompt_id] = self._stored(per_token, batch.images[row], start)
        self._image = self._text = self._mass = None

    def _stored(
        self, per_token: torch.Tensor, image_file: str | None, start: int
    ) -> dict[str, Any]:
        """One prompt's weights and image, as plain values (a sharded scan saves them)."""
        vision = self._batch_state(self.vision)
        path = str(image_file)
        png, thumbnail, (width, height) = thumbnail_png(path)
        boxes = patch_boxes(vision, width, height)
        return {
            "weights": per_token.to(torch.float16),
            "image": Path(path).name,
            "image_start": start,
            "png": png,
            "thumbnail_width": thumbnail[0],
            "thumbnail_height": thumbnail[1],
            "width": width,
            "height": height,
            "boxes": [None if b is None else [b.x0, b.y0, b.x1, b.y1, b.view] for b in boxes],
        }

    def rows(self) -> list[dict[str, Any]]:
        if self.n_prompts_seen == 0:
            return []
        share = self.share_sum / self.n_prompts_seen
        return [
            {
                "metric": "image_share",
                "layer": layer,
                "head": head,
                "value": share[layer, head].item(),
            }
            for layer in range(self.info.n_layers)
            for head in range(self.info.n_heads)
        ]

    def tables(self) -> dict[str, pd.DataFrame]:
        kept = list(self.stored.items())[: self.params.n_prompts]
        weights = [
            {
                "prompt": prompt_id,
                "layer": layer,
                "head": head,
                "weights": stored["weights"][layer, head].numpy(),
            }
            for prompt_id, stored in kept
            for layer in range(stored["weights"].shape[0])
            for head in range(stored["weights"].shape[1])
        ]
        prompts = [
            {
                "prompt": prompt_id,
                "image": stored["image"],
                "image_start": stored["image_start"],
                "width": stored["width"],
                "height": stored["height"],
                "png": stored["png"],
                "thumbnail_width": stored["thumbnail_width"],
                "thumbnail_height": stored["thumbnail_height"],
                "boxes": _boxes_table(stored["boxes"]),
            }
            for prompt_id, stored in kept
        ]
        if not kept:
            return {}
        return {
            schema.IMAGE_ATTENTION_TABLE: pd.DataFrame(weights),
            schema.IMAGE_PROMPTS_TABLE: pd.DataFrame(prompts),
        }


def _boxes_table(boxes: list[list[Any] | None]) -> dict[str, list[Any]]:
    """Per-token boxes as columns (NaN where a token has none), a struct parquet can store."""
    columns: dict[str, list[Any]] = {"x0": [], "y0": [], "x1": [], "y1": [], "view": []}
    for box in boxes:
        values = box if box is not None else [np.nan] * 4 + [""]
        for name, value in zip(columns, values, strict=True):
            columns[name].append(value)
    return columns
