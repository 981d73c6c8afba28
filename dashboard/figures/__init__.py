"""Pure `DataFrame -> plotly Figure` functions, one per chart the dashboard draws.

They take the small frames built by dashboard.frames (or a view's own adapter), never files or
Streamlit state, so tests call them directly and check the numbers that end up in the figure.
Layers run top to bottom, like the layer × head grids in the papers.

    maps.py    layer × head heatmaps, pooled patterns, NIAH grids, localities
    lines.py   sinks by layer and position, comparisons, sweeps, token series
    images.py  attention drawn over the picture a vision-language model read
    style.py   colour scales, template, shared helpers
"""

from dashboard.figures.lines import (
    compare_scatter,
    layer_profiles,
    massive_activation_lines,
    position_map,
    sink_by_layer,
    spread_lines,
    token_series,
)
from dashboard.figures.maps import (
    grid_heatmap,
    head_heatmap,
    locality_map,
    pattern_heatmap,
    profile_bars,
)
from dashboard.figures.style import DIVERGING, LOCALITY_COLOURS, SEQUENTIAL

__all__ = [
    "DIVERGING",
    "LOCALITY_COLOURS",
    "SEQUENTIAL",
    "compare_scatter",
    "grid_heatmap",
    "head_heatmap",
    "layer_profiles",
    "locality_map",
    "massive_activation_lines",
    "pattern_heatmap",
    "position_map",
    "profile_bars",
    "sink_by_layer",
    "spread_lines",
    "token_series",
]
