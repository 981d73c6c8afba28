"""Heatmaps: layer × head maps of a metric, a head's pooled pattern, NIAH grids, localities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import (
    DIVERGING,
    LOCALITY_COLOURS,
    SEQUENTIAL,
    TEMPLATE,
    escape,
    head_grid,
    short,
    wrap,
)


def head_heatmap(
    values: pd.DataFrame,
    *,
    title: str = "",
    threshold: float | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    value_label: str = "value",
    definition: str = "",
) -> go.Figure:
    """Layer × head heatmap of `values` (layer, head, value); unscored heads stay blank.

    Heads at or above `threshold` are ringed. Values of both signs get a diverging scale
    centred on 0. The colour bar is named `value_label`; `definition` is shown on hover. An
    invisible marker sits on every cell so a click selects that head (plotly heatmaps have no
    point selection of their own); the axes are fixed to the grid, so neither the markers nor
    the rings add phantom layers or heads.
    """
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
    if values.empty:
        return figure
    grid = head_grid(values, n_layers, n_heads)
    signed = np.nanmin(grid) < 0 < np.nanmax(grid)
    figure.add_trace(
        go.Heatmap(
            z=grid,
            x=list(range(grid.shape[1])),
            y=list(range(grid.shape[0])),
            colorscale=DIVERGING if signed else SEQUENTIAL,
            zmid=0 if signed else None,
            zmin=zmin,
            zmax=zmax,
            xgap=1,
            ygap=1,
            name=value_label,
            hoverinfo="skip",
            colorbar={"title": {"text": escape(value_label), "side": "right"}},
        )
    )
    layers, heads = np.meshgrid(range(grid.shape[0]), range(grid.shape[1]), indexing="ij")
    about = f"<br><i>{escape(wrap(definition))}</i>" if definition else ""
    figure.add_trace(
        go.Scatter(
            x=heads.ravel(),
            y=layers.ravel(),
            customdata=grid.ravel(),
            mode="markers",
            marker={"symbol": "square", "size": 12, "opacity": 0},
            showlegend=False,
            name="heads",
            hovertemplate=f"L%{{y}} H%{{x}}<br>{escape(value_label)} %{{customdata:.4g}}"
            f"{about}<br>click to open this head<extra></extra>",
        )
    )
    if threshold is not None:
        above = values[values["value"] >= threshold]
        figure.add_trace(
            go.Scatter(
                x=above["head"],
                y=above["layer"],
                mode="markers",
                name=f"≥ {threshold:.3g}",
                marker={"symbol": "square-open", "size": 14, "color": "red", "line": {"width": 2}},
                hoverinfo="skip",
            )
        )
    figure.update_xaxes(title="head", dtick=1, showgrid=False, zeroline=False,
                        range=[-0.5, grid.shape[1] - 0.5])  # fmt: skip
    figure.update_yaxes(
        title="layer",
        range=[grid.shape[0] - 0.5, -0.5],  # layer 0 on top, and no layer beyond the model's
        showgrid=False,
        zeroline=False,
        dtick=1 if grid.shape[0] <= 32 else None,
    )
    figure.update_layout(
        height=max(320, 18 * grid.shape[0] + 140),
        showlegend=threshold is not None,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        clickmode="event+select",
    )
    return figure


def profile_bars(profile: pd.DataFrame, title: str = "") -> go.Figure:
    """One head's percentile among all heads on each series (frames.head_profile rows)."""
    labels = [
        label if pd.isna(position) else f"{label} @k={int(position)}"
        for label, position in zip(profile["label"], profile["position"], strict=True)
    ]
    figure = go.Figure(
        go.Bar(
            x=profile["percentile"],
            y=labels,
            orientation="h",
            customdata=np.stack([profile["value"], profile["rank"], profile["n_heads"]], axis=-1)
            if len(profile)
            else None,
            text=[f"{value:.3g}" for value in profile["value"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}<br>value %{customdata[0]:.4g}<br>rank %{customdata[1]} of "
            "%{customdata[2]}<br>percentile %{x:.0f}<extra></extra>",
        ),
        layout={"template": TEMPLATE, "title": title},
    )
    figure.update_xaxes(  # room past 100 for the value printed beyond the bar
        title="percentile among heads (value shown on the bar)",
        range=[0, 112],
        tickvals=[0, 25, 50, 75, 100],
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=max(260, 26 * len(profile) + 120))
    return figure


def pattern_heatmap(
    matrix: Sequence[Sequence[float | None]], block_text: Sequence[str], *, title: str = ""
) -> go.Figure:
    """Pooled attention (query block × key block) with each block's tokens on the axes.

    Axes are numeric with token tick labels, since repeated tokens would merge categories.
    """
    n_blocks = len(block_text)
    labels = [short(text) for text in block_text]
    hover = [
        [
            f"query: {escape(repr(block_text[q]))}<br>key: {escape(repr(block_text[k]))}"
            for k in range(n_blocks)
        ]
        for q in range(n_blocks)
    ]
    figure = go.Figure(
        go.Heatmap(
            z=[[np.nan if value is None else value for value in row] for row in matrix],
            x=list(range(n_blocks)),
            y=list(range(n_blocks)),
            customdata=hover,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            xgap=0,
            ygap=0,
            hovertemplate="%{customdata}<br>attention mass %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "mass"}},
        ),
        layout={"template": TEMPLATE, "title": title},
    )
    ticks = {
        "tickmode": "array",
        "tickvals": list(range(n_blocks)),
        "ticktext": labels,
        "tickfont": {"size": 9 if n_blocks > 32 else 11},
        "showgrid": False,
    }
    figure.update_xaxes(title="key", tickangle=-60, **ticks)
    figure.update_yaxes(title="query", autorange="reversed", **ticks)
    figure.update_layout(height=max(420, 14 * n_blocks + 200))
    return figure


def grid_heatmap(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    value: str = "value",
    title: str = "",
    zmin: float | None = 0.0,
    zmax: float | None = 1.0,
    value_label: str = "value",
) -> go.Figure:
    """A generic two-axis heatmap, e.g. NIAH accuracy over context length × needle depth."""
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
    if frame.empty:
        return figure
    grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index()
    figure.add_trace(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[str(c) for c in grid.columns],
            y=[str(i) for i in grid.index],
            colorscale=SEQUENTIAL,
            zmin=zmin,
            zmax=zmax,
            xgap=1,
            ygap=1,
            text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(grid.to_numpy()),
            texttemplate="%{text}",
            hovertemplate=f"{x} %{{x}}<br>{y} %{{y}}<br>{value_label} %{{z:.3f}}<extra></extra>",
            colorbar={"title": {"text": value_label}},
        )
    )
    figure.update_xaxes(title=x, type="category")
    figure.update_yaxes(title=y, type="category", autorange="reversed")  # first row on top
    return figure


def locality_map(
    classes: pd.DataFrame,
    distance: pd.DataFrame,
    *,
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> go.Figure:
    """Layer × head map of each head's class (local / middle / global), hover = its mean
    attention distance; `classes` has layer, head, condition; `distance` layer, head, value."""
    names = list(LOCALITY_COLOURS)
    codes = classes.assign(value=classes["condition"].map(names.index).astype("float64"))
    grid = head_grid(codes[["layer", "head", "value"]], n_layers, n_heads)
    distances = (
        head_grid(distance, grid.shape[0], grid.shape[1]) if not distance.empty else grid * np.nan
    )
    colours = [LOCALITY_COLOURS[name] for name in names]
    # a step colour scale: class code i (0, 1, 2) owns the i-th third of [zmin, zmax]
    scale = [[stop, colours[i]] for i in range(3) for stop in (i / 3, (i + 1) / 3)]
    figure = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(grid.shape[1])),
            y=list(range(grid.shape[0])),
            customdata=distances,
            colorscale=scale,
            zmin=-0.5,
            zmax=2.5,
            xgap=1,
            ygap=1,
            colorbar={"tickvals": [0, 1, 2], "ticktext": names, "title": {"text": "class"}},
            hovertemplate="L%{y} H%{x}<br>mean distance %{customdata:.3g} tokens<extra></extra>",
        ),
        layout={"template": TEMPLATE, "title": "local and global heads (by mean distance)"},
    )
    figure.update_xaxes(title="head", dtick=1)
    figure.update_yaxes(title="layer", autorange="reversed")
    figure.update_layout(height=max(320, 18 * grid.shape[0] + 140))
    return figure
