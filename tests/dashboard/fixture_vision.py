"""A synthetic image-prompt run for the vision page, with values chosen so its charts have a
known right answer. Model "toyvlm": 2 layers × 2 heads; head (l, h) has index i = 2·l + h.

  divergence/vhd = (i + 1) / 4; t_vhd along prompt "img" at its answer tokens 6, 7, 8
  image_attention/image_share = i / 3
  image_attention side tables: prompt "img", a 40 × 20 (width × height) picture whose image
      tokens (positions 1-4 of the prompt) form a 2 × 2 grid; head i puts all its attention on
      image token i (so the mean over every head is 1/4 on each)
  sink/visual_sink_alpha = 0.5 on L1H0, 0.1 elsewhere; visual_sink: image token 3 (position 4)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from analyses.results import store
from probes.core import schema

N_LAYERS = N_HEADS = 2
WIDTH, HEIGHT = 40, 20
IMAGE_START = 1
ANSWER = {6: " red", 7: " square", 8: "."}
T_VHD = {6: 0.9, 7: 0.4, 8: 0.2}
SINK_TOKEN = 3
RUN = "vis"


def index(layer: int, head: int) -> int:
    return layer * N_HEADS + head


def rows() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for layer in range(N_LAYERS):
        for head in range(N_HEADS):
            i, base = index(layer, head), {"layer": layer, "head": head}
            found += [
                {**base, "probe": "divergence", "metric": "vhd", "value": (i + 1) / 4},
                {**base, "probe": "image_attention", "metric": "image_share", "value": i / 3},
                {
                    **base,
                    "probe": "sink",
                    "metric": "visual_sink_alpha",
                    "value": 0.5 if (layer, head) == (1, 0) else 0.1,
                },
            ]
    found += [
        {
            "probe": "divergence",
            "metric": "t_vhd",
            "prompt": "img",
            "position": position,
            "token": token,
            "value": T_VHD[position],
        }
        for position, token in ANSWER.items()
    ]
    found.append(
        {
            "probe": "sink",
            "metric": "visual_sink",
            "prompt": "img",
            "position": IMAGE_START + SINK_TOKEN,
            "token": "<image>",
            "value": 0.4,
        }
    )
    return found


def picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def side_tables() -> dict[str, pd.DataFrame]:
    weights = [
        {
            "prompt": "img",
            "layer": layer,
            "head": head,
            "weights": np.eye(4, dtype=np.float16)[index(layer, head)],
        }
        for layer in range(N_LAYERS)
        for head in range(N_HEADS)
    ]
    boxes = {  # tokens 0 1 / 2 3, row by row
        "x0": [0.0, 0.5, 0.0, 0.5],
        "y0": [0.0, 0.0, 0.5, 0.5],
        "x1": [0.5, 1.0, 0.5, 1.0],
        "y1": [0.5, 0.5, 1.0, 1.0],
        "view": ["image"] * 4,
    }
    prompts = {
        "prompt": "img",
        "image": "blue.png",
        "image_start": IMAGE_START,
        "width": WIDTH,
        "height": HEIGHT,
        "png": picture(),
        "thumbnail_width": WIDTH,
        "thumbnail_height": HEIGHT,
        "boxes": boxes,
    }
    return {
        schema.IMAGE_ATTENTION_TABLE: pd.DataFrame(weights),
        schema.IMAGE_PROMPTS_TABLE: pd.DataFrame([prompts]),
    }


def write_vision_run(data_dir: Path, manifest: dict[str, Any]) -> None:
    """The run "vis" (older than the toy runs, so never the default one)."""
    store.write_run(
        data_dir,
        RUN,
        pd.DataFrame(rows()).assign(model="toyvlm"),
        {**manifest, "created": "2025-12-30T00:00:00+00:00"},
        side_tables=side_tables(),
    )
