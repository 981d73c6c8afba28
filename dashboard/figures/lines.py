"""Lines, bars and scatters: sinks per layer and position, comparisons, sweeps, token series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import (
    SEQUENTIAL,
    TEMPLATE,
    escape,
    short,
)


def sink_by_layer(percent: pd.DataFrame, epsilon: float | None = None) -> go.Figure:
    """Sink_k^ε (% of heads) per layer, one line per key position k."""
    title = "Sink_k^ε by layer" + (f" (ε = {epsilon:g})" if epsilon is not None else "")
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
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
    last = int(percent["layer"].max()) if len(percent) else 0
    figure.update_xaxes(  # exactly the model's layers: no −1 or one past the last
        title="layer", dtick=1 if last < 32 else None, range=[-0.5, last + 0.5]
    )
    figure.update_yaxes(title="% of heads that sink (α > ε)", range=[0, 101])
    return figure


def position_map(frame: pd.DataFrame, *, value_label: str, title: str = "") -> go.Figure:
    """layer × key position heatmap (frames.sink_map): where each layer's sinks sit."""
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
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
        layout={"template": TEMPLATE, "title": "Massive activations entering each layer"}
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
    last = int(ratios["layer"].max()) if len(ratios) else 0
    figure.update_xaxes(title="layer", range=[-0.5, last + 0.5])
    figure.update_yaxes(title="max |h| / median |h|", type="log")
    return figure


def compare_scatter(paired: pd.DataFrame, label_a: str, label_b: str, title: str = "") -> go.Figure:
    """Each head's value in run A against run B, with the identity line."""
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
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
    figure = go.Figure(layout={"template": TEMPLATE, "title": f"{statistic} over heads by depth"})
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
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
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


MAX_TOKEN_TICKS = 40


def token_series(
    series: Mapping[str, Sequence[float | None]],
    tokens: Sequence[str],
    *,
    title: str = "",
    y_label: str = "value",
    first_position: int = 0,
) -> go.Figure:
    """Per-token values (e.g. WAAD_t, FAI_s) along one prompt, the tokens on the x axis; the
    first of `tokens` sits at `first_position` of the prompt (a slice of it, e.g. an answer).

    At most `MAX_TOKEN_TICKS` tokens are labelled (every n-th, with its position), so the axis
    stays legible on long prompts; the hover names every token, and the range slider zooms.
    """
    figure = go.Figure(layout={"template": TEMPLATE, "title": title})
    positions = list(range(first_position, first_position + len(tokens)))
    step = max(1, -(-len(tokens) // MAX_TOKEN_TICKS))
    for name, values in series.items():
        figure.add_trace(
            go.Scatter(
                x=positions[: len(values)],
                y=list(values),
                mode="lines+markers",
                name=name,
                customdata=[escape(repr(token)) for token in tokens[: len(values)]],
                hovertemplate="%{x}: %{customdata}<br>%{y:.4g}<extra>" + name + "</extra>",
            )
        )
    labelled = positions[::step]
    figure.update_xaxes(
        title="token (position: text)" + (f", every {step}th labelled" if step > 1 else ""),
        tickmode="array",
        tickvals=labelled,
        ticktext=[
            f"{p}: {short(tokens[p - first_position], 10)}"
            if step > 1
            else short(tokens[p - first_position], 12)
            for p in labelled
        ],
        tickangle=-50,
        tickfont={"size": 11},
        rangeslider={"visible": len(tokens) > MAX_TOKEN_TICKS, "thickness": 0.06},
    )
    figure.update_yaxes(title=y_label)
    figure.update_layout(height=460, showlegend=len(series) > 1)
    return figure
