"""Image prompts of a vision-language run: the stored pictures, each image token's box, and a
head's (or a layer's) attention per image token, from the image_attention probe's side tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from probes.core import schema


@dataclass(frozen=True)
class ImagePrompt:
    """One stored image prompt: its picture (a PNG thumbnail), the original size, where its
    image tokens start in the prompt, and per image token its box (x0, y0, x1, y1 as fractions
    of the original image, and the view it belongs to; NaN where a token has no box)."""

    prompt: str
    image: str
    image_start: int
    width: int
    height: int
    png: bytes
    thumbnail_width: int
    thumbnail_height: int
    boxes: pd.DataFrame  # token (index among the image tokens), x0, y0, x1, y1, view

    @property
    def n_tokens(self) -> int:
        return len(self.boxes)


def image_prompts(prompts: pd.DataFrame | None) -> dict[str, ImagePrompt]:
    """The `image_prompts` side table by prompt id (empty when the run has none)."""
    if prompts is None:
        return {}
    found = {}
    for row in prompts.itertuples(index=False):
        boxes = pd.DataFrame({name: list(row.boxes[name]) for name in ("x0", "y0", "x1", "y1")})
        boxes = boxes.astype("float64")
        boxes.insert(0, "token", range(len(boxes)))
        boxes["view"] = list(row.boxes["view"])
        found[str(row.prompt)] = ImagePrompt(
            str(row.prompt),
            str(row.image),
            int(row.image_start),
            int(row.width),
            int(row.height),
            bytes(row.png),
            int(row.thumbnail_width),
            int(row.thumbnail_height),
            boxes,
        )
    return found


def token_weights(
    attention: pd.DataFrame, prompt: str, layer: int | None = None, head: int | None = None
) -> np.ndarray:
    """Attention per image token of one head, or the mean over a layer's heads (head None),
    or over every head (layer None too), from the `image_attention` side table."""
    rows = attention[attention["prompt"] == prompt]
    if layer is not None:
        rows = rows[rows["layer"] == layer]
    if head is not None:
        rows = rows[rows["head"] == head]
    if rows.empty:
        return np.array([])
    return np.stack([np.asarray(w, dtype=np.float64) for w in rows["weights"]]).mean(axis=0)


def visual_sink_tokens(table: pd.DataFrame, prompt: ImagePrompt) -> list[int]:
    """Image-token indices of the prompt's visual sink tokens (the sink probe's
    "visual_sink" rows, by position in the prompt), largest α first."""
    rows = table[
        (table["probe"] == "sink")
        & (table["metric"] == schema.metric("sink", "visual_sink"))
        & (table["prompt"] == prompt.prompt)
    ].sort_values("value", ascending=False)
    tokens = rows["position"].dropna().astype("int64") - prompt.image_start
    return [int(t) for t in tokens if 0 <= t < prompt.n_tokens]


def answer_caption(answers: pd.DataFrame | None, prompt: str) -> str | None:
    """How the divergence probe had `prompt`'s answer, and its text, from the
    `divergence_answers` side table (None when the run has no row for it)."""
    if answers is None or answers.empty:
        return None
    rows = answers[answers["prompt"] == prompt]
    if rows.empty:
        return None
    row = rows.iloc[0]
    how = (
        "generated (greedy, with the image)"
        if row["answer"] == "generated"
        else ("teacher-forced (the prompt's own last tokens)")
    )
    return f"Answer {how}: {row['text']!r}"
