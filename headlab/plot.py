"""Figures (plotly, torch-free to import): `head_map` of any per-head metric, `pattern` of one
head on a text, and every chart of the dashboard (`dashboard.figures`) under its own name.

Each returns a plotly Figure: `hl.plot.show(figure)` in a notebook (interactive, with a PNG
beside it for where plotly's JavaScript cannot run), `.write_html(path)` anywhere.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

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
from probes.core.errors import HeadlabError
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
    "show",
    "sink_by_layer",
    "spread_lines",
    "static_image",
    "token_series",
]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDTH, HEIGHT = 800, 450  # px of a static image whose figure sets no size (plotly's: 700 × 500)


class NoBrowserError(HeadlabError):
    """No Chrome or Chromium to draw a static image with."""


class NoStaticImageWarning(UserWarning):
    """`show` had no browser to draw the static image with: the figure is interactive only."""


def static_image(
    figure: go.Figure,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
    colors: int | None = 256,
) -> bytes:
    """PNG of `figure`, drawn offline by kaleido in a headless Chrome/Chromium found on the
    machine (Debian's: `make browser`; or name one in $BROWSER_PATH) with the plotly.js that
    plotly ships, MathJax off (kaleido would fetch it from a CDN). One browser serves every call
    of the process: the first starts it (about 3 s), later ones take about 0.3 s. `colors`:
    a palette of that many colours, chosen to cover the image's colours (colour bars stay
    smooth; no dithering), for about 40 % of the bytes of full colour; None for full colour."""
    import kaleido
    from choreographer.browsers.chromium import Chromium

    if Chromium.find_browser(skip_local=False) is None:
        raise NoBrowserError(
            "a static image needs Chrome or Chromium: `make browser` installs Debian's, or set "
            "$BROWSER_PATH to one"
        )
    kaleido.start_sync_server(mathjax=False, silence_warnings=True)  # once; closed at exit
    layout = figure.layout
    options = {
        "format": "png",
        "width": width or layout.width or WIDTH,
        "height": height or layout.height or HEIGHT,
        "scale": scale,
    }
    png = bytes(kaleido.calc_fig_sync(figure.to_dict(), opts=options))
    return png if colors is None else _with_palette(png, colors)


def _with_palette(png: bytes, colors: int) -> bytes:
    from PIL import Image

    drawn = Image.open(io.BytesIO(png)).convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", drawn.size, "white"), drawn).convert("RGB")
    quantized = flat.quantize(colors, Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    quantized.save(out, "PNG", optimize=True)
    return out.getvalue()


def show(
    figure: go.Figure, *, width: int | None = None, height: int | None = None, scale: float = 1.0
) -> None:
    """Display `figure` in a notebook as one output that holds the interactive figure (plotly's
    mime type, drawn by JupyterLab and VS Code) and a PNG of it (`static_image`), which
    nbconvert's HTML, GitHub and other viewers that run no plotly.js show instead. No plotly.js
    is embedded and none is loaded from a CDN. Without a browser to draw the PNG it warns
    (`NoStaticImageWarning`) and shows the interactive figure alone."""
    from IPython.display import display

    bundle: dict[str, Any] = {
        PLOTLY_MIME: json.loads(pio.to_json(figure, validate=False)),
        "text/plain": f"<plotly figure: {figure.layout.title.text or 'untitled'}>",
    }
    try:
        png = static_image(figure, width=width, height=height, scale=scale)
    except NoBrowserError as error:
        warnings.warn(f"{error}; showing the figure without it", NoStaticImageWarning, 2)
    else:
        bundle["image/png"] = base64.b64encode(png).decode("ascii")
    display(bundle, raw=True)


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
