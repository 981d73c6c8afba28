"""Shared look of the dashboard's figures: colour scales, template, layer × head grids, labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

SEQUENTIAL = "Viridis"


DIVERGING = "RdBu_r"


TEMPLATE = "plotly_white"


def head_grid(values: pd.DataFrame, n_layers: int | None, n_heads: int | None) -> np.ndarray:
    layers = n_layers if n_layers is not None else int(values["layer"].max()) + 1
    heads = n_heads if n_heads is not None else int(values["head"].max()) + 1
    grid = np.full((layers, heads), np.nan)
    grid[values["layer"].to_numpy(int), values["head"].to_numpy(int)] = values["value"]
    return grid


def escape(text: str) -> str:
    """Plotly reads tags in labels as markup (a "<s>" token would strike through, not show)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def wrap(text: str, width: int = 60) -> str:
    """Long hover text broken into lines of about `width` characters (plotly's `<br>`)."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width)) if text else text


def short(text: str, width: int = 14) -> str:
    """A tick label: newlines visible, at most `width` characters, markup escaped."""
    text = text.replace("\n", "⏎")
    return escape(text if len(text) <= width else text[: width - 1] + "…")


LOCALITY_COLOURS = {"local": "#2c7bb6", "middle": "#e0e0e0", "global": "#d7191c"}
