"""The pure figure functions: the numbers that end up in each figure are the ones given."""

import math

import numpy as np
import pandas as pd
import pytest

from dashboard import figures


def values_frame(cells: dict[tuple[int, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"layer": layer, "head": head, "value": value} for (layer, head), value in cells.items()]
    )


def test_head_heatmap_places_each_value_at_its_layer_and_head():
    cells = {(0, 0): 0.1, (0, 2): 0.5, (1, 1): 0.9, (2, 0): 0.3}
    figure = figures.head_heatmap(values_frame(cells), n_layers=3, n_heads=3)
    heatmap, targets = figure.data
    z = np.array(heatmap.z, dtype=float)
    assert z.shape == (3, 3)
    for (layer, head), value in cells.items():
        assert z[layer, head] == value
    unscored = [
        (layer, head) for layer in range(3) for head in range(3) if (layer, head) not in cells
    ]
    assert all(math.isnan(z[cell]) for cell in unscored)  # not scored stays blank, never 0
    assert tuple(figure.layout.yaxis.range) == (2.5, -0.5)  # layer 0 on top, layers 0-2 only
    assert tuple(figure.layout.xaxis.range) == (-0.5, 2.5)
    # one click target per cell, carrying the cell's value for the hover
    assert sorted(zip(targets.y, targets.x, strict=True)) == [
        (a, b) for a in range(3) for b in range(3)
    ]
    for layer, head, value in zip(targets.y, targets.x, targets.customdata, strict=True):
        assert value == z[layer, head] or (math.isnan(value) and math.isnan(z[layer, head]))
    assert "%{customdata" in targets.hovertemplate and "click" in targets.hovertemplate


def test_head_heatmap_names_its_colour_bar_and_defines_the_metric_on_hover():
    figure = figures.head_heatmap(
        values_frame({(0, 0): 0.5}), value_label="α (attention to key k)", definition="mean A[i, k]"
    )
    assert figure.data[0].colorbar.title.text == "α (attention to key k)"
    assert "mean A[i, k]" in figure.data[1].hovertemplate


def test_a_ring_on_the_last_layer_adds_no_phantom_layer():
    cells = {(layer, head): float(layer) for layer in range(30) for head in range(9)}
    figure = figures.head_heatmap(values_frame(cells), threshold=29.0, n_layers=30, n_heads=9)
    assert tuple(figure.layout.yaxis.range) == (29.5, -0.5)


def test_head_heatmap_rings_exactly_the_heads_at_or_above_the_threshold():
    cells = {(0, 0): 0.1, (0, 1): 0.5, (1, 0): 0.5000001, (1, 1): 0.9}
    figure = figures.head_heatmap(values_frame(cells), threshold=0.5)
    ring = figure.data[2]
    assert sorted(zip(ring.y, ring.x, strict=True)) == [(0, 1), (1, 0), (1, 1)]
    none = figures.head_heatmap(values_frame(cells), threshold=0.95)
    assert len(none.data[2].x) == 0
    assert len(figures.head_heatmap(values_frame(cells)).data) == 2  # no threshold, no ring


def test_head_heatmap_uses_a_diverging_scale_centred_on_zero_only_for_signed_values():
    signed = figures.head_heatmap(values_frame({(0, 0): -1.0, (0, 1): 2.0})).data[0]
    assert signed.zmid == 0
    positive = figures.head_heatmap(values_frame({(0, 0): 1.0, (0, 1): 2.0})).data[0]
    assert positive.zmid is None
    assert positive.colorscale != signed.colorscale
    negative = figures.head_heatmap(values_frame({(0, 0): -1.0, (0, 1): -2.0})).data[0]
    assert negative.colorscale == positive.colorscale  # one sign: sequential


def test_head_heatmap_of_nothing_is_an_empty_figure():
    empty = pd.DataFrame(columns=["layer", "head", "value"])
    assert len(figures.head_heatmap(empty, title="x").data) == 0


def test_pattern_heatmap_keeps_repeated_tokens_apart_and_blanks_unstored_cells():
    matrix = [[1.0, None, None], [0.25, 0.75, None], [0.5, 0.0, 0.5]]
    labels = [" the", " cat", " the"]
    figure = figures.pattern_heatmap(matrix, labels)
    (heatmap,) = figure.data
    z = np.array(heatmap.z, dtype=float)
    assert z[1, 0] == 0.25 and z[2, 1] == 0.0
    assert math.isnan(z[0, 1]) and math.isnan(z[1, 2])  # above the causal diagonal: not stored
    assert list(figure.layout.xaxis.tickvals) == [0, 1, 2]  # numeric axis: " the" twice
    assert list(figure.layout.xaxis.ticktext) == labels
    assert list(figure.layout.yaxis.ticktext) == labels
    assert (heatmap.zmin, heatmap.zmax) == (0, 1)
    assert "' the'" in heatmap.customdata[2][0]


def test_labels_escape_markup_so_special_tokens_show():
    figure = figures.pattern_heatmap([[1.0]], ["<|im_start|>"])
    assert figure.layout.xaxis.ticktext == ("&lt;|im_start|&gt;",)
    assert "&lt;|im_start|&gt;" in figure.data[0].customdata[0][0]
    series = figures.token_series({"x": [1.0, 2.0]}, ["<s>", "a & b"])
    assert list(series.layout.xaxis.ticktext) == ["&lt;s&gt;", "a &amp; b"]


def test_pattern_heatmap_shortens_long_block_labels_but_hovers_the_full_text():
    text = "a very long block of several tokens\nwith a newline"
    figure = figures.pattern_heatmap([[1.0]], [text])
    (label,) = figure.layout.xaxis.ticktext
    assert len(label) <= 14 and label.endswith("…")
    assert repr(text) in figure.data[0].customdata[0][0]


def test_profile_bars_show_percentile_with_the_value_and_rank_in_hover():
    profile = pd.DataFrame(
        {
            "label": ["sink/alpha", "sink/hidden_sink_count"],
            "position": [0, None],
            "value": [0.8, 2.0],
            "rank": [1, 5],
            "n_heads": [12, 12],
            "percentile": [100.0, 66.7],
        }
    )
    figure = figures.profile_bars(profile)
    (bars,) = figure.data
    assert list(bars.x) == [100.0, 66.7]
    assert list(bars.y) == ["sink/alpha @k=0", "sink/hidden_sink_count"]
    assert bars.customdata[1].tolist() == [2.0, 5, 12]


def test_sink_by_layer_draws_one_line_per_position():
    percent = pd.DataFrame(
        {"layer": [0, 1, 0, 1], "position": [0, 0, 1, 1], "value": [10.0, 90.0, 0.0, 5.0]}
    )
    figure = figures.sink_by_layer(percent, epsilon=0.3)
    assert [trace.name for trace in figure.data] == ["k=0", "k=1"]
    assert list(figure.data[0].y) == [10.0, 90.0]
    assert "ε = 0.3" in figure.layout.title.text


def test_position_map_pivots_layer_by_position():
    frame = pd.DataFrame({"layer": [0, 0, 1, 1], "position": [0, 1, 0, 1], "value": [1, 2, 3, 4]})
    (heatmap,) = figures.position_map(frame, value_label="α").data
    assert np.array(heatmap.z).tolist() == [[1, 2], [3, 4]]
    assert list(heatmap.x) == [0, 1]


def test_massive_activation_lines_use_a_log_axis_and_name_both_series():
    ratios = pd.DataFrame(
        {"layer": [0, 0, 1, 1], "condition": ["sink_token", "other_tokens"] * 2,
         "value": [300.0, 4.0, 900.0, 5.0]}
    )  # fmt: skip
    figure = figures.massive_activation_lines(ratios)
    assert figure.layout.yaxis.type == "log"
    assert {trace.name for trace in figure.data} == {"first token", "largest other token"}


def test_compare_scatter_has_the_identity_line_over_the_data_range():
    paired = pd.DataFrame({"layer": [0, 1], "head": [0, 0], "a": [0.1, 0.9], "b": [0.5, -0.2]})
    identity, heads = figures.compare_scatter(paired, "A", "B").data
    assert list(identity.x) == list(identity.y) == [-0.2, 0.9]
    assert list(heads.x) == [0.1, 0.9] and list(heads.y) == [0.5, -0.2]


def test_layer_profiles_line_models_up_by_relative_depth():
    profile = pd.DataFrame({"layer": [0, 1, 2], "mean": [1.0, 2.0, 3.0], "max": [1, 2, 3],
                            "depth": [0.0, 0.5, 1.0]})  # fmt: skip
    figure = figures.layer_profiles({"a": profile}, "mean")
    assert list(figure.data[0].x) == [0.0, 0.5, 1.0]
    assert list(figure.data[0].y) == [1.0, 2.0, 3.0]


def test_grid_heatmap_puts_lengths_on_x_and_depths_on_y():
    frame = pd.DataFrame(
        {"length": [64, 64, 128, 128], "depth": [0, 50, 0, 50], "value": [1.0, 0.5, 0.25, 0.0]}
    )
    (heatmap,) = figures.grid_heatmap(frame, x="length", y="depth").data
    assert list(heatmap.x) == ["64", "128"] and list(heatmap.y) == ["0", "50"]
    assert figures.grid_heatmap(frame, x="length", y="depth").layout.yaxis.autorange == "reversed"
    assert np.array(heatmap.z).tolist() == [[1.0, 0.25], [0.5, 0.0]]
    assert heatmap.text[1][0] == "0.50"


def test_spread_lines_draw_the_mean_and_a_min_max_band_over_repeats():
    frame = pd.DataFrame(
        {
            "k": [1, 1, 2, 2, 1, 2],
            "selection": ["random-k"] * 4 + ["top-k"] * 2,
            "value": [2.0, 3.0, 1.0, 4.0, 0.5, 0.1],
        }
    )
    figure = figures.spread_lines(frame, x="k", group="selection")
    names = [trace.name for trace in figure.data]
    assert names == ["random-k (min–max)", "random-k", "top-k"]  # one repeat: no band
    band, random_mean, top = figure.data
    assert list(random_mean.y) == [2.5, 2.5]
    assert list(band.y) == [3.0, 4.0, 1.0, 2.0]  # max along k, then min back
    assert list(top.y) == [0.5, 0.1]
    assert list(figure.layout.xaxis.tickvals) == [1, 2]  # ticks at the k that were run


def test_token_series_puts_the_tokens_on_the_axis():
    figure = figures.token_series({"WAAD_t": [None, 1.0, 2.0]}, ["<s>", " a", " b"])
    (line,) = figure.data
    assert list(line.y) == [None, 1.0, 2.0]
    assert list(figure.layout.xaxis.ticktext) == ["&lt;s&gt;", " a", " b"]
    assert list(line.customdata) == ["'&lt;s&gt;'", "' a'", "' b'"]


def test_locality_map_colours_each_class_and_hovers_the_distance():
    classes = pd.DataFrame(
        {"layer": [0, 0, 1], "head": [0, 1, 0], "condition": ["local", "global", "middle"]}
    )
    distance = values_frame({(0, 0): 1.5, (0, 1): 30.0, (1, 0): 8.0})
    (heatmap,) = figures.locality_map(classes, distance, n_layers=2, n_heads=2).data
    z = np.array(heatmap.z, dtype=float)
    assert z[0, 0] == 0 and z[0, 1] == 2 and z[1, 0] == 1 and math.isnan(z[1, 1])
    assert np.array(heatmap.customdata, dtype=float)[0, 1] == 30.0
    stops = [stop for stop, _ in heatmap.colorscale]
    assert stops == sorted(stops)
    colours = {value: colour for value, colour in heatmap.colorscale}
    assert colours[0.0] == figures.LOCALITY_COLOURS["local"]
    assert colours[1.0] == figures.LOCALITY_COLOURS["global"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: figures.head_heatmap(values_frame({(0, 0): 1.0})),
        lambda: figures.pattern_heatmap([[1.0]], ["x"]),
        lambda: figures.grid_heatmap(
            pd.DataFrame({"length": [1], "depth": [0], "value": [1.0]}), x="length", y="depth"
        ),
    ],
)
def test_figures_serialise_to_json(build):
    assert build().to_json()  # what st.plotly_chart sends to the browser


def test_a_long_prompts_token_axis_labels_at_most_forty_tokens_with_their_positions():
    tokens = [f" tok{i}" for i in range(256)]
    figure = figures.token_series({"FAI_s": [0.1] * 256}, tokens)
    ticks = list(figure.layout.xaxis.ticktext)
    assert 20 <= len(ticks) <= 40
    assert ticks[1] == "7:  tok7"  # every 7th token, with its position
    assert figure.layout.xaxis.rangeslider.visible
    assert len(figure.data[0].customdata) == 256  # the hover still names every token
