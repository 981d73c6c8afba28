"""Attention drawn over the picture a vision-language model read: one colour cell per image
token, over the token's part of the image (boxes from dashboard.frames.vision)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import TEMPLATE
from dashboard.frames.vision import ImagePrompt

# Low attention leaves the picture as it is, high attention tints it red: the picture stays
# readable under the map (an opaque colour scale would hide what the head looks at).
OVERLAY_SCALE = [
    [0.0, "rgba(255, 200, 0, 0)"],
    [0.5, "rgba(255, 110, 0, 0.45)"],
    [1.0, "rgba(220, 0, 0, 0.7)"],
]


def image_overlay(
    prompt: ImagePrompt,
    weights: np.ndarray,
    *,
    view: str = "image",
    title: str = "",
    value_label: str = "attention",
    marked: Sequence[int] = (),
    zmin: float = 0.0,
    zmax: float | None = None,
) -> go.Figure:
    """The prompt's picture with `weights` (one per image token) as a translucent heatmap over
    the boxes of the tokens of `view`; tokens in `marked` (e.g. visual sinks) are outlined.
    The colour scale runs from `zmin` (default 0, so near-equal weights look equal rather than
    stretched into contrast) to `zmax` (default: the largest weight). Coordinates are the
    original image's pixels, so the picture keeps its aspect ratio."""
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
    source = "data:image/png;base64," + base64.b64encode(prompt.png).decode("ascii")
    dx, dy = prompt.width / prompt.thumbnail_width, prompt.height / prompt.thumbnail_height
    figure.add_trace(  # x0, y0 name the first pixel's centre: its edges then lie on 0
        go.Image(source=source, dx=dx, dy=dy, x0=dx / 2, y0=dy / 2, hoverinfo="skip")
    )
    boxes = prompt.boxes[(prompt.boxes["view"] == view) & prompt.boxes["x0"].notna()]
    if len(weights) and not boxes.empty:
        top = zmax if zmax is not None else float(np.max(weights))
        _add_cells(figure, prompt, boxes, weights, value_label, (zmin, top))
    for token in marked:
        box = prompt.boxes.iloc[token]
        if box["view"] == view and not np.isnan(box["x0"]):
            figure.add_shape(
                type="rect",
                x0=box["x0"] * prompt.width,
                x1=box["x1"] * prompt.width,
                y0=box["y0"] * prompt.height,
                y1=box["y1"] * prompt.height,
                line={"color": "#00e5ff", "width": 3},
            )
    figure.update_xaxes(visible=False, range=[0, prompt.width], constrain="domain")
    figure.update_yaxes(
        visible=False, range=[prompt.height, 0], scaleanchor="x", constrain="domain"
    )
    figure.update_layout(height=520, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return figure


def _add_cells(
    figure: go.Figure,
    prompt: ImagePrompt,
    boxes: pd.DataFrame,
    weights: np.ndarray,
    value_label: str,
    scale: tuple[float, float],
) -> None:
    """A heatmap whose bricks are the boxes: their edges make the grid (every architecture's
    tokens of one view tile it), cells without a token stay blank."""
    xs = np.unique(np.concatenate([boxes["x0"], boxes["x1"]]).round(9))
    ys = np.unique(np.concatenate([boxes["y0"], boxes["y1"]]).round(9))
    z = np.full((len(ys) - 1, len(xs) - 1), np.nan)
    text = np.full(z.shape, "", dtype=object)
    for box in boxes.itertuples(index=False):
        column = int(np.searchsorted(xs, round(box.x0, 9)))
        row = int(np.searchsorted(ys, round(box.y0, 9)))
        z[row, column] = weights[int(box.token)]
        text[row, column] = f"image token {int(box.token)}"
    figure.add_trace(
        go.Heatmap(
            z=z,
            x=xs * prompt.width,
            y=ys * prompt.height,
            text=text,
            colorscale=OVERLAY_SCALE,
            zmin=scale[0],
            zmax=scale[1] if scale[1] > scale[0] else scale[0] + 1,
            colorbar={"title": {"text": value_label, "side": "right"}},
            hovertemplate="%{text}<br>" + value_label + " %{z:.4g}<extra></extra>",
            xgap=0,
            ygap=0,
        )
    )
