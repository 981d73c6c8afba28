"""Pure `DataFrame -> plotly Figure` functions, one per chart the dashboard draws.

They take the small frames built by dashboard.frames (or a view's own adapter), never files or
Streamlit state, so tests call them directly and check the numbers that end up in the figure.
Layers run top to bottom, like the layer × head grids in the papers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
_TEMPLATE = "plotly_white"


def _grid(values: pd.DataFrame, n_layers: int | None, n_heads: int | None) -> np.ndarray:
    layers = n_layers if n_layers is not None else int(values["layer"].max()) + 1
    heads = n_heads if n_heads is not None else int(values["head"].max()) + 1
    grid = np.full((layers, heads), np.nan)
    grid[values["layer"].to_numpy(int), values["head"].to_numpy(int)] = values["value"]
    return grid


def head_heatmap(
    values: pd.DataFrame,
    *,
    title: str = "",
    threshold: float | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """Layer × head heatmap of `values` (layer, head, value); unscored heads stay blank.

    Heads at or above `threshold` are ringed. Values of both signs get a diverging scale
    centred on 0.
    """
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    if values.empty:
        return figure
    grid = _grid(values, n_layers, n_heads)
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
            name="value",
            hovertemplate="L%{y} H%{x}<br>value %{z:.4g}<extra></extra>",
            colorbar={"title": {"text": "value"}},
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
                hovertemplate="L%{y} H%{x} ≥ threshold<extra></extra>",
            )
        )
    figure.update_xaxes(title="head", dtick=1, showgrid=False)
    figure.update_yaxes(
        title="layer",
        autorange="reversed",
        showgrid=False,
        dtick=1 if grid.shape[0] <= 32 else None,
    )
    figure.update_layout(
        height=max(320, 18 * grid.shape[0] + 140),
        showlegend=threshold is not None,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
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
        layout={"template": _TEMPLATE, "title": title},
    )
    figure.update_xaxes(title="percentile among heads (value shown on the bar)", range=[0, 100])
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=max(260, 26 * len(profile) + 120))
    return figure


def _escape(text: str) -> str:
    """Plotly reads tags in labels as markup (a "<s>" token would strike through, not show)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(text: str, width: int = 14) -> str:
    """A tick label: newlines visible, at most `width` characters, markup escaped."""
    text = text.replace("\n", "⏎")
    return _escape(text if len(text) <= width else text[: width - 1] + "…")


def pattern_heatmap(
    matrix: Sequence[Sequence[float | None]], block_text: Sequence[str], *, title: str = ""
) -> go.Figure:
    """Pooled attention (query block × key block) with each block's tokens on the axes.

    Axes are numeric with token tick labels, since repeated tokens would merge categories.
    """
    n_blocks = len(block_text)
    labels = [_short(text) for text in block_text]
    hover = [
        [
            f"query: {_escape(repr(block_text[q]))}<br>key: {_escape(repr(block_text[k]))}"
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
        layout={"template": _TEMPLATE, "title": title},
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


def sink_by_layer(percent: pd.DataFrame, epsilon: float | None = None) -> go.Figure:
    """Sink_k^ε (% of heads) per layer, one line per key position k."""
    title = "Sink_k^ε by layer" + (f" (ε = {epsilon:g})" if epsilon is not None else "")
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    for position, group in percent.groupby("position", sort=True):
        figure.add_trace(
            go.Scatter(
                x=group["layer"],
                y=group["value"],
                mode="lines+markers",
                name=f"k={position}",
                hovertemplate="layer %{x}<br>%{y:.1f}% of heads<extra>k="
                + str(position)
                + "</extra>",
            )
        )
    figure.update_xaxes(title="layer", dtick=1 if percent["layer"].nunique() <= 32 else None)
    figure.update_yaxes(title="% of heads that sink (α > ε)", range=[0, 101])
    return figure


def position_map(frame: pd.DataFrame, *, value_label: str, title: str = "") -> go.Figure:
    """layer × key position heatmap (frames.sink_map): where each layer's sinks sit."""
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    if frame.empty:
        return figure
    grid = frame.pivot(index="layer", columns="position", values="value").sort_index()
    figure.add_trace(
        go.Heatmap(
            z=grid.to_numpy(),
            x=list(grid.columns),
            y=list(grid.index),
            colorscale=SEQUENTIAL,
            xgap=1,
            ygap=1,
            hovertemplate="layer %{y}, key %{x}<br>" + value_label + " %{z:.3g}<extra></extra>",
            colorbar={"title": {"text": value_label}},
        )
    )
    figure.update_xaxes(title="key position k", dtick=1)
    figure.update_yaxes(title="layer", autorange="reversed")
    figure.update_layout(height=max(320, 16 * len(grid) + 140))
    return figure


def massive_activation_lines(ratios: pd.DataFrame) -> go.Figure:
    """Largest |h| over the median per layer, at the first token vs anywhere else (log scale)."""
    figure = go.Figure(
        layout={"template": _TEMPLATE, "title": "Massive activations entering each layer"}
    )
    names = {"sink_token": "first token", "other_tokens": "largest other token"}
    for condition, group in ratios.groupby("condition", sort=True):
        figure.add_trace(
            go.Scatter(
                x=group["layer"],
                y=group["value"],
                mode="lines+markers",
                name=names.get(condition, condition),
            )
        )
    figure.update_xaxes(title="layer")
    figure.update_yaxes(title="max |h| / median |h|", type="log")
    return figure


def compare_scatter(paired: pd.DataFrame, label_a: str, label_b: str, title: str = "") -> go.Figure:
    """Each head's value in run A against run B, with the identity line."""
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    if paired.empty:
        return figure
    low = float(min(paired["a"].min(), paired["b"].min()))
    high = float(max(paired["a"].max(), paired["b"].max()))
    figure.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="equal",
            line={"dash": "dot", "color": "grey"},
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=paired["a"],
            y=paired["b"],
            mode="markers",
            name="head",
            customdata=np.stack([paired["layer"], paired["head"]], axis=-1),
            marker={
                "color": paired["layer"],
                "colorscale": SEQUENTIAL,
                "showscale": True,
                "colorbar": {"title": {"text": "layer"}},
            },
            hovertemplate="L%{customdata[0]} H%{customdata[1]}<br>A %{x:.4g}<br>B %{y:.4g}"
            "<extra></extra>",
        )
    )
    figure.update_xaxes(title=label_a)
    figure.update_yaxes(title=label_b)
    return figure


def layer_profiles(profiles: Mapping[str, pd.DataFrame], statistic: str = "mean") -> go.Figure:
    """Per-layer mean (or max) over heads against relative depth, one line per run/model."""
    figure = go.Figure(layout={"template": _TEMPLATE, "title": f"{statistic} over heads by depth"})
    for name, profile in profiles.items():
        figure.add_trace(
            go.Scatter(
                x=profile["depth"],
                y=profile[statistic],
                mode="lines+markers",
                name=name,
                customdata=profile["layer"],
                hovertemplate="layer %{customdata}<br>%{y:.4g}<extra>" + name + "</extra>",
            )
        )
    figure.update_xaxes(title="relative depth (layer / last layer)", range=[-0.02, 1.02])
    figure.update_yaxes(title=statistic)
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
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
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


def spread_lines(
    frame: pd.DataFrame,
    *,
    x: str,
    group: str,
    value: str = "value",
    title: str = "",
    y_label: str = "value",
) -> go.Figure:
    """Mean over repeats (seeds, samples) per x, one line per group, with a min–max band.

    `frame` has one row per (group, x, repeat); groups with one repeat get no band.
    """
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for index, (name, rows) in enumerate(frame.groupby(group, sort=True)):
        color = palette[index % len(palette)]
        stats = rows.groupby(x)[value].agg(["mean", "min", "max", "count"]).sort_index()
        if (stats["count"] > 1).any():
            figure.add_trace(
                go.Scatter(
                    x=[*stats.index, *stats.index[::-1]],
                    y=[*stats["max"], *stats["min"][::-1]],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.2,
                    line={"width": 0},
                    name=f"{name} (min–max)",
                    hoverinfo="skip",
                    showlegend=True,
                )
            )
        figure.add_trace(
            go.Scatter(
                x=list(stats.index),
                y=stats["mean"],
                mode="lines+markers",
                name=str(name),
                line={"color": color},
                customdata=stats["count"],
                hovertemplate=f"{x} %{{x}}<br>mean %{{y:.4g}} over %{{customdata}}"
                f"<extra>{name}</extra>",
            )
        )
    ticks = sorted(frame[x].dropna().unique()) if not frame.empty else []
    figure.update_xaxes(title=x, tickmode="array" if len(ticks) <= 16 else "auto", tickvals=ticks)
    figure.update_yaxes(title=y_label)
    return figure


def token_series(
    series: Mapping[str, Sequence[float | None]],
    tokens: Sequence[str],
    *,
    title: str = "",
    y_label: str = "value",
) -> go.Figure:
    """Per-token values (e.g. WAAD_t, FAI_s) along one prompt, the tokens on the x axis."""
    figure = go.Figure(layout={"template": _TEMPLATE, "title": title})
    positions = list(range(len(tokens)))
    for name, values in series.items():
        figure.add_trace(
            go.Scatter(
                x=positions[: len(values)],
                y=list(values),
                mode="lines+markers",
                name=name,
                customdata=[_escape(repr(token)) for token in tokens[: len(values)]],
                hovertemplate="%{x}: %{customdata}<br>%{y:.4g}<extra>" + name + "</extra>",
            )
        )
    figure.update_xaxes(
        title="token",
        tickmode="array",
        tickvals=positions,
        ticktext=[_short(token, 10) for token in tokens],
        tickangle=-60,
        tickfont={"size": 9 if len(tokens) > 48 else 11},
    )
    figure.update_yaxes(title=y_label)
    return figure


LOCALITY_COLOURS = {"local": "#2c7bb6", "middle": "#e0e0e0", "global": "#d7191c"}


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
    grid = _grid(codes[["layer", "head", "value"]], n_layers, n_heads)
    distances = (
        _grid(distance, grid.shape[0], grid.shape[1]) if not distance.empty else grid * np.nan
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
        layout={"template": _TEMPLATE, "title": "local and global heads (by mean distance)"},
    )
    figure.update_xaxes(title="head", dtick=1)
    figure.update_yaxes(title="layer", autorange="reversed")
    figure.update_layout(height=max(320, 18 * grid.shape[0] + 140))
    return figure
