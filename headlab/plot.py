"""Figures (plotly, torch-free to import): `head_map` of any per-head metric, `pattern` of one
head on a text, and every chart of the dashboard (`dashboard.figures`) under its own name.

Each returns a plotly Figure: `.show()` in a notebook, `.write_html(path)` anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go

from dashboard import frames
from dashboard.figures import (
    compare_scatter,
    grid_heatmap,
    head_heatmap,
    layer_profiles,
    locality_map,
    massive_activation_lines,
    pattern_heatmap,
    position_map,
    profile_bars,
    sink_by_layer,
    spread_lines,
    token_series,
)
from headlab.results import head_values, series
from probes.core.heads import Head, check_in_model

if TYPE_CHECKING:
    from probes.models import LoadedModel

__all__ = [
    "compare_scatter",
    "grid_heatmap",
    "head_heatmap",
    "head_map",
    "layer_profiles",
    "locality_map",
    "massive_activation_lines",
    "pattern",
    "pattern_heatmap",
    "position_map",
    "profile_bars",
    "sink_by_layer",
    "spread_lines",
    "token_series",
]


def head_map(
    table: pd.DataFrame,
    metric: str,
    *,
    probe: str | None = None,
    position: int | None = None,
    condition: str | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Layer × head heatmap of one per-head metric of a results table (heads at or above
    `threshold` ringed); probe / position / condition as `hl.top_heads` takes them."""
    probe, position, condition = series(table, metric, probe, position, condition)
    values = head_values(table, metric, probe=probe, position=position, condition=condition)
    at = f" at key {position}" if position is not None else ""
    where = at + (f" [{condition}]" if condition else "")
    return head_heatmap(values, title=title or f"{probe}/{metric}{where}", threshold=threshold)


def pattern(
    model: LoadedModel, head: Any, text: str, *, max_blocks: int = 32, title: str | None = None
) -> go.Figure:
    """`head`'s attention on `text` (BOS first), from one forward pass of the pattern probe:
    query block × key block, at most `max_blocks` blocks of tokens per axis (one token each for
    short texts). Interventions applied around the call show in the pattern."""
    from analyses.jobs.scan import ScanConfig
    from analyses.jobs.scan import table as scan_table
    from probes.inputs.prompts import text_suite

    chosen = Head.of(head, "pattern")
    check_in_model([chosen], model.info, "pattern")
    config = ScanConfig(
        model=model.info.name,
        probes=("pattern",),
        max_tokens=None,
        progress=False,
        probe_params={"pattern": {"n_prompts": 1, "max_blocks": max_blocks}},
    )
    rows, probes = scan_table(config, model, text_suite([text]))
    (prompt,) = frames.pattern_prompts(probes[0].tables()["pattern_prompts"]).values()
    cells = frames.pattern_cells(rows, chosen.layer, chosen.head, prompt.prompt)
    matrix = frames.pattern_matrix(cells, prompt.n_blocks)
    labels = [prompt.block_text(block) for block in range(prompt.n_blocks)]
    return pattern_heatmap(matrix, labels, title=title or f"{chosen} on {text[:40]!r}")
