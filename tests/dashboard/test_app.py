"""Every dashboard page under Streamlit's AppTest, on the fixture runs (tests/dashboard/
fixture_runs.py): no exception, the expected charts and tables, and widgets that change them."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analyses.results import store
from tests.dashboard import fixture_runs as fx

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = [
    "overview",
    "head_map",
    "head",
    "sinks",
    "retrieval",
    "future_attention",
    "vision",
    "sweeps",
    "compare",
]


def open_page(data_dir: Path, page: str = "overview", query: dict[str, str] | None = None):
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.session_state["data_dir"] = str(data_dir)
    app.query_params.update(query or {})
    app.run()
    if page != "overview":
        app.switch_page(f"views/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def decoded(value: Any) -> Any:
    """Plotly's JSON with its typed arrays ({"dtype", "bdata", "shape"}) turned into lists."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        if "shape" in value:
            array = array.reshape([int(dim) for dim in str(value["shape"]).split(",")])
        return array.tolist()
    if isinstance(value, dict):
        return {key: decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decoded(item) for item in value]
    return value


def charts(app: AppTest) -> dict[str, dict[str, Any]]:
    """Plotly figures on the page by widget key, as the JSON sent to the browser."""
    return {chart.key: decoded(json.loads(chart.proto.spec)) for chart in app.get("plotly_chart")}


def table(app: AppTest, *columns: str) -> Any:
    """The one DataFrame on the page that has these columns (display-only tables carry no key)."""
    (found,) = [t.value for t in app.dataframe if set(columns) <= set(t.value.columns)]
    return found


def assert_grid(got: list[list[float]], expected: list[list[float]]) -> None:
    np.testing.assert_allclose(np.array(got, float), np.array(expected, float), rtol=1e-9)


def z_of(figure: dict[str, Any]) -> list[list[float]]:
    return [[math.nan if v is None else v for v in row] for row in figure["data"][0]["z"]]


def escaped(tokens: list[str]) -> list[str]:
    """Tick labels as plotly gets them: markup escaped so "<s>" shows as text."""
    return [t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for t in tokens]


def texts(app: AppTest) -> str:
    parts = [
        e.value
        for kind in ("info", "warning", "error", "markdown", "caption", "code")
        for e in getattr(app, kind)
    ]
    return "\n".join(str(part) for part in parts)


# --- every page -------------------------------------------------------------------------------


EXPECTED_CHARTS = {
    "overview": set(),
    "head_map": {"map_heatmap"},
    "head": {"head_profile", "head_pattern"},
    "sinks": {"sinks_by_layer", "sinks_map", "sinks_hidden", "sinks_massive"},
    "retrieval": {"retrieval_grid", "retrieval_heads", "retrieval_masking", "retrieval_sweep"},
    "future_attention": {"future_waad", "future_fai", "future_locality"},
    "sweeps": {"sweep_topk", "sweep_strength", "sweep_single"},
    "compare": {"compare_map_a", "compare_map_b", "compare_scatter", "compare_profiles"},
    "vision": set(),  # the toy runs have no image prompts: see the vision tests below
}
EXPECTED_TABLES = {  # the columns that identify each table
    "overview": [
        ("run_id", "model", "probes"),
        ("probe", "parameters"),
        ("metric", "heads"),
        ("field", "value"),
    ],
    "head_map": [("rank", "name", "value")],
    "head": [("label", "rank", "percentile", "definition"), ("name", "similarity")],
    "sinks": [],
    "retrieval": [("rank", "name", "value"), ("question", "response", "recall")],
    "future_attention": [("position", "token", "value")],
    "sweeps": [("k", "selection", "seed")],
    "compare": [("run", "heads", "mean", "max")],
    "vision": [],
}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_its_charts_and_tables_on_a_full_run(fixture_data, page):
    app = open_page(fixture_data, page)
    assert not app.error, [e.value for e in app.error]
    assert set(charts(app)) == EXPECTED_CHARTS[page]
    for columns in EXPECTED_TABLES[page]:
        assert len(table(app, *columns)) > 0
    assert app.session_state["run"] == "toy-a"  # the newest run by manifest time


@pytest.mark.parametrize(
    ("page", "command"),
    [
        ("head", "headlab scan --probes top_keys"),
        ("retrieval", "headlab scan --probes retrieval"),
        ("future_attention", "headlab scan --probes future_attention"),
        ("sweeps", "headlab sweep"),
        ("vision", "headlab scan --model tiny-random-llava --prompts"),
    ],
)
def test_pages_say_what_to_run_when_the_run_lacks_their_data(fixture_data, page, command):
    app = open_page(fixture_data, page, query={"run": "toy-b"})
    assert app.session_state["run"] == "toy-b"
    codes = [code.value for code in app.code]
    flag = f"--data {fixture_data}"  # the data directory's one documented flag
    assert any(code.startswith(command) and flag in code for code in codes), codes
    assert "in this run" in texts(app)


def test_retrieval_without_a_masking_experiment_says_how_to_run_one(tmp_path):
    table = pd.DataFrame(fx.retrieval_rows()).assign(model="toy")
    store.write_run(tmp_path, "ret", table, fx.manifest("toy", fx.N_LAYERS, fx.N_HEADS, {}))
    app = open_page(tmp_path, "retrieval")
    assert {"retrieval_grid", "retrieval_heads"} <= set(charts(app))
    assert "retrieval_masking" not in charts(app)
    assert any(
        code.value == f"headlab mask-retrieval ret --ks 1,2,4,8 --data {tmp_path}"
        for code in app.code
    )


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_an_empty_or_missing_data_directory_shows_what_to_run(tmp_path, page, state):
    root = tmp_path / "data"
    if state == "empty":
        (root / "runs").mkdir(parents=True)
    app = open_page(root, page)
    assert not app.error
    assert not charts(app)
    assert "does not exist" in texts(app) if state == "missing" else "holds no runs" in texts(app)
    assert any(code.value.startswith("headlab scan") for code in app.code)


def test_the_sidebar_warns_when_not_bound_to_localhost(fixture_data):
    app = open_page(fixture_data)  # AppTest leaves server.address unset: every interface
    assert any("every interface" in warning.value for warning in app.sidebar.warning)


# --- safety -----------------------------------------------------------------------------------


@pytest.mark.parametrize("crafted", ["../toy-a", "..", "/etc/passwd", "toy-a/../../x", "nope"])
def test_a_crafted_run_in_the_url_is_ignored(fixture_data, crafted):
    app = open_page(fixture_data, "head_map", query={"run": crafted})
    assert app.session_state["run"] == "toy-a"
    assert "map_heatmap" in charts(app)


def test_a_corrupt_run_is_reported_by_name_not_as_a_traceback(tmp_path):
    root = fx.write_fixture_runs(tmp_path)
    (root / "runs" / "toy-b" / store.RESULTS_FILE).write_bytes(b"not parquet")
    app = open_page(root, "sinks", query={"run": "toy-b"})
    assert "results.parquet" in " ".join(e.value for e in app.error)
    assert not charts(app)


# --- widgets change what is shown -------------------------------------------------------------


def alpha_grid(position: int) -> list[list[float]]:
    return [
        [fx.alpha(layer, head, position) for head in range(fx.N_HEADS)]
        for layer in range(fx.N_LAYERS)
    ]


def test_head_map_follows_metric_position_threshold_and_k(fixture_data):
    app = open_page(fixture_data, "head_map")
    assert app.selectbox(key="map_series").value == "sink/alpha"  # the scan's first probe
    last = app.selectbox(key="map_series").options[-1]  # offered with its definition's name
    assert last == "sweep/ioi.logit_diff.harm [zero] — harm of ioi.logit_diff"
    app.selectbox(key="map_series").set_value("sink/alpha")
    rerun(app)
    assert_grid(z_of(charts(app)["map_heatmap"]), alpha_grid(0))
    heatmap = charts(app)["map_heatmap"]["data"][0]
    assert heatmap["colorbar"]["title"]["text"] == "α (attention to key k)"
    assert "mean attention queries i ≥ k pay to key k" in texts(app)
    app.selectbox(key="map_position").set_value(2)
    rerun(app)
    assert_grid(z_of(charts(app)["map_heatmap"]), alpha_grid(2))

    app.selectbox(key="map_series").set_value("sink/hidden_sink_count")
    rerun(app)
    assert not [box for box in app.selectbox if box.key == "map_position"]  # no positions
    grid = z_of(charts(app)["map_heatmap"])
    assert grid == [[float(head) for head in range(fx.N_HEADS)]] * fx.N_LAYERS

    app.selectbox(key="map_series").set_value("sink/alpha")
    rerun(app)
    app.selectbox(key="map_position").set_value(0)
    app.toggle(key="map_use_threshold").set_value(True)
    rerun(app)
    app.slider(key="map_threshold").set_value(0.75)
    app.number_input(key="map_k").set_value(3)
    rerun(app)
    figure = charts(app)["map_heatmap"]
    ring = figure["data"][2]
    assert sorted(zip(ring["y"], ring["x"], strict=True)) == [(2, 0), (2, 1), (2, 2), (2, 3)]
    assert list(table(app, "rank", "name")["name"]) == ["L2H3", "L2H2", "L2H1"]
    app.number_input(key="map_k").set_value(12)
    rerun(app)
    assert list(table(app, "rank", "name")["name"]) == ["L2H3", "L2H2", "L2H1", "L2H0"]  # ≥ 0.75


def test_the_head_page_shows_the_chosen_heads_scores_and_pattern(fixture_data):
    app = open_page(fixture_data, "head")
    app.selectbox(key="head_layer").set_value(2)
    app.selectbox(key="head_head").set_value(3)
    rerun(app)
    scores = table(app, "label", "rank")
    alpha = scores[(scores["metric"] == "sink/alpha") & (scores["position"] == 0)].iloc[0]
    assert alpha["value"] == pytest.approx(1.0) and alpha["rank"] == 1
    assert alpha["label"] == "α (attention to key k)"
    assert alpha["definition"].startswith("mean attention queries i ≥ k pay to key k")
    pattern = charts(app)["head_pattern"]
    assert app.selectbox(key="head_prompt").value == "p0"
    causal = [
        [v if k <= q else math.nan for k, v in enumerate(row)]
        for q, row in enumerate(fx.pooled(2, 3, "p0"))
    ]
    assert_grid(z_of(pattern), causal)
    assert pattern["layout"]["xaxis"]["ticktext"] == escaped(fx.TOKENS["p0"])

    app.selectbox(key="head_prompt").set_value("p1")
    app.selectbox(key="head_layer").set_value(0)
    app.selectbox(key="head_head").set_value(0)
    rerun(app)
    pattern = charts(app)["head_pattern"]
    blocks = escaped(["<s> a", " b c", " d e", " f g", " h i"])
    assert pattern["layout"]["yaxis"]["ticktext"] == blocks
    grid = z_of(pattern)
    expected = fx.pooled(0, 0, "p1")  # previous-token head, two tokens per block
    assert [grid[q][k] for q in range(5) for k in range(q + 1)] == pytest.approx(
        [expected[q][k] for q in range(5) for k in range(q + 1)]
    )
    assert grid[1][0] == pytest.approx(0.5)  # " b" looks at "a" (block 0), " c" at " b"
    assert "pooled into 5 blocks" in texts(app)


def test_the_head_page_starts_from_the_head_in_the_url(fixture_data):
    app = open_page(fixture_data, "head", query={"layer": "1", "head": "2"})
    assert (app.selectbox(key="head_layer").value, app.selectbox(key="head_head").value) == (1, 2)
    assert app.title[0].value == "L1H2 of toy"


def test_sinks_page_plots_sink_percent_by_layer_for_the_chosen_positions(fixture_data):
    app = open_page(fixture_data, "sinks")
    (metric,) = app.metric
    assert metric.value == "75.0%"  # 9 of 12 heads have α_0 > 0.3
    figure = charts(app)["sinks_by_layer"]
    assert [trace["name"] for trace in figure["data"]] == ["k=0"]
    assert figure["data"][0]["y"] == pytest.approx([25.0, 100.0, 100.0])
    app.multiselect(key="sinks_positions").set_value([0, 1])
    rerun(app)
    figure = charts(app)["sinks_by_layer"]
    assert [trace["name"] for trace in figure["data"]] == ["k=0", "k=1"]
    assert figure["data"][1]["y"] == pytest.approx([0.0, 0.0, 0.0])

    before = z_of(charts(app)["sinks_map"])
    app.radio(key="sinks_map_metric").set_value("mean α over heads")
    rerun(app)
    after = z_of(charts(app)["sinks_map"])
    assert after != before
    assert after[2][0] == pytest.approx(sum(fx.alpha(2, h, 0) for h in range(4)) / 4)


def test_retrieval_page_shows_the_niah_grid_scores_and_masking(fixture_data):
    app = open_page(fixture_data, "retrieval")
    grid = charts(app)["retrieval_grid"]["data"][0]
    cells = {
        (int(x), int(y)): grid["z"][row][col]
        for row, y in enumerate(grid["y"])
        for col, x in enumerate(grid["x"])
    }
    assert cells == fx.NIAH
    ring = charts(app)["retrieval_heads"]["data"][2]
    assert set(zip(ring["y"], ring["x"], strict=True)) == fx.RETRIEVAL_HEADS
    assert "2 of 12 heads" in texts(app)
    app.number_input(key="retrieval_threshold").set_value(0.5)
    rerun(app)
    assert len(charts(app)["retrieval_heads"]["data"][2]["x"]) == 0
    assert "0 of 12 heads" in texts(app)
    masking = charts(app)["retrieval_masking"]  # from the masking experiment's side table
    by_name = {trace["name"]: trace for trace in masking["data"]}
    accuracy = fx.MASKING_ACCURACY
    assert by_name["top-k"]["y"] == pytest.approx([accuracy[("top", k, None)] for k in (1, 2)])
    means = [(accuracy[("random", k, 0)] + accuracy[("random", k, 1)]) / 2 for k in (1, 2)]
    assert by_name["random-k"]["y"] == pytest.approx(means)
    assert masking["layout"]["shapes"][0]["y0"] == accuracy[("none", 0, None)]
    app.radio(key="mask_measure").set_value("recall")
    rerun(app)
    assert "recall" in charts(app)["retrieval_masking"]["layout"]["yaxis"]["title"]["text"]
    sweep = charts(app)["retrieval_sweep"]  # a sweep ranked by retrieval score
    top = next(trace for trace in sweep["data"] if trace["name"] == "top-k")
    assert top["y"] == pytest.approx(list(fx.MASKED_K.values()))


def test_future_attention_page_plots_the_token_series_with_their_tokens(fixture_data):
    app = open_page(fixture_data, "future_attention")
    figures_ = charts(app)
    waad = figures_["future_waad"]
    assert waad["data"][0]["y"] == fx.WAAD
    assert waad["layout"]["xaxis"]["ticktext"] == escaped(fx.TOKENS["p0"])
    assert figures_["future_fai"]["data"][0]["y"] == fx.FAI
    anchors = table(app, "token", "value")
    assert list(anchors["token"])[:2] == ["<s>", " cat"]  # FAI 0.4, 0.3
    codes = z_of(figures_["future_locality"])
    assert codes[0] == [0.0] * 4 and codes[2] == [2.0] * 4 and codes[1] == [1.0] * 4


def test_sweeps_page_compares_top_k_with_random_k_over_seeds(fixture_data):
    app = open_page(fixture_data, "sweeps")
    assert app.selectbox(key="sweep_ranking").value == "retrieval/retrieval_score"
    app.selectbox(key="sweep_ranking").set_value("sink/alpha@0")
    rerun(app)
    app.selectbox(key="sweep_mode").set_value("zero")
    app.selectbox(key="sweep_metric").set_value("ioi.logit_diff")
    rerun(app)
    figure = charts(app)["sweep_topk"]
    by_name = {trace["name"]: trace for trace in figure["data"]}
    assert by_name["top-k"]["y"] == pytest.approx([fx.TOP_K[1], fx.TOP_K[2]])
    means = [(fx.RANDOM_K[(k, 0)] + fx.RANDOM_K[(k, 1)]) / 2 for k in (1, 2)]
    assert by_name["random-k"]["y"] == pytest.approx(means)
    assert "random-k (min–max)" in by_name
    assert figure["layout"]["shapes"][0]["y0"] == fx.CLEAN  # the clean baseline

    app.selectbox(key="sweep_metric").set_value("ioi.logit_diff.harm")
    rerun(app)
    figure = charts(app)["sweep_topk"]
    top = next(trace for trace in figure["data"] if trace["name"] == "top-k")
    assert top["y"] == pytest.approx([fx.CLEAN - fx.TOP_K[1], fx.CLEAN - fx.TOP_K[2]])
    assert not figure["layout"].get("shapes")

    strength = charts(app)["sweep_strength"]
    assert strength["data"][0]["y"] == pytest.approx(list(fx.STRENGTHS.values()))
    app.selectbox(key="sweep_single_metric").set_value("ioi.logit_diff.harm")
    rerun(app)
    single = z_of(charts(app)["sweep_single"])
    assert single[2][3] == pytest.approx(0.1 * fx.index(2, 3))
    assert "sweep_attribution" in charts(app)  # attribution estimates for the same measure


def test_compare_page_pairs_heads_of_one_model_and_lines_up_two_models_by_depth(fixture_data):
    app = open_page(fixture_data, "compare")
    assert (app.selectbox(key="compare_a").value, app.selectbox(key="compare_b").value) == (
        "toy-a",
        "toy-b",
    )
    assert "Pearson r = -1.000" in texts(app)  # toy-b has α reversed
    assert "compare_scatter" in charts(app)
    app.selectbox(key="compare_b").set_value("duo")
    rerun(app)
    assert "compare_scatter" not in charts(app)
    assert "different layer × head grids" in texts(app)
    profiles = charts(app)["compare_profiles"]
    assert [trace["x"][-1] for trace in profiles["data"]] == [1.0, 1.0]  # both end at depth 1


# --- vision -----------------------------------------------------------------------------------


def open_vision(fixture_data, query=None):
    return open_page(fixture_data, "vision", query={"run": "vis", **(query or {})})


def overlay_cells(figure: dict[str, Any]) -> list[list[float]]:
    (heatmap,) = [trace for trace in figure["data"] if trace["type"] == "heatmap"]
    return z_of({"data": [heatmap]})


def test_vision_page_draws_vhd_t_vhd_the_overlay_and_the_head_maps(fixture_data):
    from tests.dashboard import fixture_vision as fv

    app = open_vision(fixture_data, {"layer": "1", "head": "0"})
    drawn = charts(app)
    assert set(drawn) == {
        "vision_vhd",
        "vision_tvhd",
        "vision_overlay_image",
        "vision_share",
        "vision_sinks",
    }
    assert_grid(z_of(drawn["vision_vhd"]), [[0.25, 0.5], [0.75, 1.0]])
    assert_grid(z_of(drawn["vision_share"]), [[0, 1 / 3], [2 / 3, 1]])
    (line,) = drawn["vision_tvhd"]["data"]
    assert {x: y for x, y in zip(line["x"], line["y"], strict=True) if y is not None} == fv.T_VHD
    # L1H0 is head index 2: all its attention on image token 2, the bottom-left cell.
    assert_grid(overlay_cells(drawn["vision_overlay_image"]), [[0, 0], [1, 0]])
    heatmap = next(t for t in drawn["vision_overlay_image"]["data"] if t["type"] == "heatmap")
    assert heatmap["x"] == [0.0, 20.0, 40.0] and heatmap["y"] == [0.0, 10.0, 20.0]
    (outline,) = drawn["vision_overlay_image"]["layout"]["shapes"]  # the visual sink: token 3
    assert (outline["x0"], outline["y0"], outline["x1"], outline["y1"]) == (20, 10, 40, 20)
    assert "random weights" not in texts(app)  # toyvlm is not a tiny-random model


def test_vision_page_averages_heads_when_asked(fixture_data):
    app = open_vision(fixture_data)
    app.radio(key="vision_scope").set_value("mean over every head")
    drawn = charts(rerun(app))
    assert_grid(overlay_cells(drawn["vision_overlay_image"]), [[0.25, 0.25], [0.25, 0.25]])
    app.radio(key="vision_scope").set_value("mean over a layer's heads")
    rerun(app)
    app.selectbox(key="vision_layer_only").set_value(0)
    drawn = charts(rerun(app))
    assert_grid(overlay_cells(drawn["vision_overlay_image"]), [[0.5, 0.5], [0, 0]])
    app.toggle(key="vision_ol").set_value(False)
    assert "shapes" not in charts(rerun(app))["vision_overlay_image"]["layout"]
