"""`hl.plot.show`: one notebook output holding the interactive figure and a PNG of it, drawn
offline in the machine's Chromium (`make browser`)."""

from __future__ import annotations

import base64
import io

import plotly.graph_objects as go
import pytest
from choreographer.browsers.chromium import Chromium
from PIL import Image

import headlab as hl


def two_bars() -> go.Figure:
    figure = go.Figure(go.Bar(x=["L0H1", "L2H3"], y=[1.0, 0.25], marker_color="#d7191c"))
    return figure.update_layout(title="two heads", height=300, template="plotly_white")


@pytest.fixture
def shown(monkeypatch):
    """The bundles `show` hands to IPython's display, instead of displaying them."""
    bundles = []

    def display(bundle, raw=False):
        assert raw
        bundles.append(bundle)

    monkeypatch.setattr("IPython.display.display", display)
    return bundles


def test_the_static_image_is_the_figure_drawn_at_its_size_in_a_palette():
    png = hl.plot.static_image(two_bars())
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size, image.mode) == ("PNG", (hl.plot.WIDTH, 300), "P")
    colours = {colour for _, colour in image.convert("RGB").getcolors(256)}
    assert (215, 25, 28) in colours and (255, 255, 255) in colours  # the bars, the paper
    full = Image.open(io.BytesIO(hl.plot.static_image(two_bars(), width=400, colors=None)))
    assert (full.size, full.mode) == ((400, 300), "RGBA")
    assert hl.plot.static_image(two_bars()) == png  # the same figure gives the same bytes


def test_show_puts_the_interactive_figure_and_its_png_in_one_output(shown):
    figure = two_bars()
    hl.plot.show(figure)
    (bundle,) = shown
    assert set(bundle) == {hl.plot.PLOTLY_MIME, "image/png", "text/plain"}
    assert bundle[hl.plot.PLOTLY_MIME]["data"][0]["x"] == ["L0H1", "L2H3"]
    assert bundle[hl.plot.PLOTLY_MIME]["layout"]["title"]["text"] == "two heads"
    assert base64.b64decode(bundle["image/png"]) == hl.plot.static_image(figure)
    assert bundle["text/plain"] == "<plotly figure: two heads>"


def test_without_a_browser_show_warns_and_shows_the_interactive_figure(shown, monkeypatch):
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    with pytest.raises(hl.plot.NoBrowserError, match="make browser"):
        hl.plot.static_image(two_bars())
    with pytest.warns(hl.plot.NoStaticImageWarning, match="Chromium"):
        hl.plot.show(two_bars())
    (bundle,) = shown
    assert set(bundle) == {hl.plot.PLOTLY_MIME, "text/plain"}
