"""The pure reshapes behind each view, on the fixture runs whose right answers are known."""

import pandas as pd
import pytest

from analyses.sweeps.plan import Unit
from dashboard import data, frames
from tests.dashboard import fixture_runs as fx


@pytest.fixture(scope="module")
def toy(fixture_data) -> pd.DataFrame:
    return data.load_results(fixture_data, "toy-a")


def test_head_series_lists_every_per_head_metric_with_its_positions(toy):
    series = frames.head_series(toy).set_index("label")
    assert series.loc["sink/alpha", "positions"] == list(range(fx.SINK_POSITIONS))
    assert series.loc["sink/hidden_sink_count", "positions"] == []
    assert "future_attention/locality [local]" in series.index
    assert "sink/massive_ratio [sink_token]" not in series.index  # layer-level, no head


def test_head_values_pick_one_series_and_position(toy):
    values = frames.head_values(toy, "sink", "alpha", None, 0).set_index(["layer", "head"])
    assert len(values) == fx.N_LAYERS * fx.N_HEADS
    for layer, head in fx.heads():
        assert values.loc[(layer, head), "value"] == pytest.approx(fx.alpha(layer, head, 0))
    later = frames.head_values(toy, "sink", "alpha", None, 2)
    assert later["value"].tolist() == pytest.approx([0.02] * 12)
    assert frames.head_values(toy, "sink", "alpha", float("nan"), 0).equals(
        frames.head_values(toy, "sink", "alpha", None, 0)
    )  # NaN condition (as pandas stores a missing one) means no condition


def test_top_heads_rank_highest_first_and_respect_the_threshold(toy):
    values = frames.head_values(toy, "sink", "alpha", None, 0)
    top = frames.top_heads(values, 3)
    assert list(top["name"]) == ["L2H3", "L2H2", "L2H1"]
    assert list(top["rank"]) == [1, 2, 3]
    above = frames.top_heads(values, 100, threshold=0.75)
    assert list(above["name"]) == ["L2H3", "L2H2", "L2H1", "L2H0"]  # 12/12 … 9/12 ≥ 0.75
    with_nan = pd.concat([values, pd.DataFrame([{"layer": 9, "head": 9, "value": float("nan")}])])
    assert "L9H9" not in set(frames.top_heads(with_nan, 100)["name"])


def test_head_profile_ranks_the_head_on_every_series(toy):
    profile = frames.head_profile(toy, 2, 3)
    alpha = profile[(profile["label"] == "sink/alpha") & (profile["position"] == 0)].iloc[0]
    assert alpha["rank"] == 1 and alpha["n_heads"] == 12 and alpha["percentile"] == 100.0
    hidden = profile[profile["label"] == "sink/hidden_sink_count"].iloc[0]
    assert hidden["value"] == 3.0 and hidden["rank"] == 1  # h = 3: tied top with 2 others
    assert hidden["percentile"] == pytest.approx(100 * 10 / 11)  # the three share 9, 10, 11
    bottom = frames.head_profile(toy, 0, 0)
    alpha = bottom[(bottom["label"] == "sink/alpha") & (bottom["position"] == 0)].iloc[0]
    assert alpha["rank"] == 12 and alpha["percentile"] == 0.0
    assert frames.head_profile(toy, 7, 7).empty  # no such head


def test_pattern_matrix_leaves_unstored_cells_empty():
    cells = pd.DataFrame({"query_block": [0, 1, 1], "key_block": [0, 0, 1], "value": [1, 0.5, 0.5]})
    assert frames.pattern_matrix(cells, 2) == [[1.0, None], [0.5, 0.5]]


def test_sink_percent_by_layer_is_the_mean_sink_rate_in_percent(toy):
    percent = frames.sink_percent_by_layer(toy, [0]).set_index("layer")["value"]
    for layer in range(fx.N_LAYERS):
        rates = [fx.alpha(layer, h, 0) > fx.EPSILON for h in range(fx.N_HEADS)]
        assert percent[layer] == pytest.approx(100 * sum(rates) / fx.N_HEADS)


def test_niah_grid_reads_length_from_position_and_depth_from_condition(toy):
    grid = frames.niah_grid(toy, "niah_accuracy")
    assert {(r.length, r.depth): r.value for r in grid.itertuples()} == fx.NIAH
    assert frames.overall(toy, "retrieval", "niah_accuracy") == pytest.approx(
        sum(fx.NIAH.values()) / len(fx.NIAH)
    )


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (Unit("ioi", "zero", ((3, 1),)), {"kind": "zero", "selection": None}),
        (
            Unit("ioi", "zero", ((3, 1), (4, 2)), group="top2:sink/alpha@0"),
            {"kind": "zero", "selection": "top", "k": 2, "ranking": "sink/alpha@0", "seed": None},
        ),
        (
            Unit("ioi", "mean", ((3, 0),), group="random1:retrieval/retrieval_score:seed7"),
            {"selection": "random", "k": 1, "ranking": "retrieval/retrieval_score", "seed": 7},
        ),
        (
            Unit("ioi", "scale", ((3, 1),), 0.5, group="heads:L3H1"),
            {"kind": "scale", "strength": 0.5, "selection": "heads", "heads": "L3H1"},
        ),
        (
            Unit("ioi", "softpag", ((3, 1),), 2.0, group="top4:sink/alpha@0[x]-asc"),
            {"strength": 2.0, "selection": "top", "k": 4, "ranking": "sink/alpha@0[x]-asc"},
        ),
    ],
)
def test_sweep_conditions_parse_back_what_analyses_plan_spells(unit, expected):
    parsed = frames.parse_condition(unit.condition)
    for key, value in expected.items():
        assert parsed[key] == value, (unit.condition, key)


def test_topk_curves_hold_top_and_random_values_by_k_and_seed(toy):
    units = frames.sweep_units(toy)
    curves = frames.topk_curves(units, "ioi.logit_diff", "sink/alpha@0", "zero")
    top = curves[curves["selection"] == "top-k"].set_index("k")["value"].to_dict()
    assert top == fx.TOP_K
    random = curves[curves["selection"] == "random-k"]
    assert {(r.k, r.seed): r.value for r in random.itertuples()} == fx.RANDOM_K
    assert frames.clean_value(toy, "ioi.logit_diff.harm") == fx.CLEAN
    assert frames.topk_curves(units, "ioi.logit_diff", "sink/alpha@0", "mean").empty


def test_strength_curves_follow_the_strength_grid(toy):
    curves = frames.strength_curves(frames.sweep_units(toy), "ioi.logit_diff")
    assert dict(zip(curves["strength"], curves["value"], strict=True)) == fx.STRENGTHS
    assert set(curves["series"]) == {"scale L2H3"}


def test_token_rows_decode_prompt_and_token_from_the_condition(toy):
    rows = frames.token_rows(toy, "future_attention", ["waad"])
    assert list(rows["token"]) == [fx.TOKENS["p0"][p] for p in rows["position"]]
    assert list(rows["value"]) == [v for v in fx.WAAD if v is not None]


def test_a_metric_every_head_ties_on_puts_each_head_at_the_50th_percentile():
    values = pd.Series([0.0] * 12)
    assert frames.series.percentile(values, 0.0) == 50.0
    assert frames.series.percentile(pd.Series([1.0, 2.0, 3.0]), 3.0) == 100.0
