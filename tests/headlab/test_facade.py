"""`import headlab as hl` on the tiny random model: every facade name gives what the package it
delegates to gives, and bad input is a HeadlabError naming it."""

import inspect
import json
import warnings

import pandas as pd
import pytest
import torch

import headlab as hl
from analyses.cli.main import main
from analyses.interventions.kinds import HeadAblation, HeadScale, hooks
from analyses.interventions.means import head_means
from analyses.results import ranking, store
from probes import bridge, engine
from probes.core.errors import PromptTooLongError
from probes.families.attention_stats import AttentionStatsProbe
from probes.families.sink import SinkParams, SinkProbe
from probes.inputs.prompts import text_suite
from tests import planting

TEXTS = ["mary gave the ball to john", "the dog went to the store with the man and the cat"]
TEXT = "mary gave the ball to john and the dog went to the store"


def test_scan_gives_exactly_the_rows_engine_run_gives_and_writes_nothing(tiny_model, tmp_path):
    got = hl.scan(
        tiny_model, TEXTS, ["sink", "attention_stats"], {"sink": {"epsilon": 0.2}}, data=tmp_path
    )
    info = tiny_model.info
    probes = [SinkProbe(info, SinkParams(epsilon=0.2)), AttentionStatsProbe(info)]
    rows = engine.run(tiny_model, probes, text_suite(TEXTS), progress=False)
    expected = store.conform(rows.assign(model="tiny-random", run_id=None))
    pd.testing.assert_frame_equal(got, expected)
    sink_rate = got[(got.metric == "sink_rate") & (got.position == 0)]
    assert len(sink_rate) == info.n_layers * info.n_heads and sink_rate.value.between(0, 1).all()
    assert list(tmp_path.iterdir()) == []
    as_object = hl.scan(tiny_model, TEXTS, "sink", {"sink": SinkParams(epsilon=0.2)})
    pd.testing.assert_frame_equal(as_object, got[got.probe == "sink"].reset_index(drop=True))


def test_a_saved_scan_is_the_run_the_cli_writes(tiny_model, tmp_path):
    saved = hl.scan(
        tiny_model, TEXTS, ["sink", "pattern"], save=True, data=tmp_path / "py", run_id="py"
    )
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"id": f"text-{i:03d}", "text": text}) for i, text in enumerate(TEXTS)]
    prompts.write_text("\n".join(lines) + "\n")
    argv = ["scan", "--model", "tiny-random", "--probes", "sink,pattern", "--prompts"]
    argv += [str(prompts), "--data", str(tmp_path / "cli"), "--run-id", "cli", "--quiet"]
    assert main(argv) == 0
    cli = store.load_run(tmp_path / "cli", "cli")
    pd.testing.assert_frame_equal(saved.drop(columns="run_id"), cli.drop(columns="run_id"))
    assert set(saved.run_id) == {"py"}
    assert hl.runs(tmp_path / "py")[["run_id", "status", "kind"]].values.tolist() == [
        ["py", "ok", "scan"]
    ]
    pd.testing.assert_frame_equal(hl.read(data=tmp_path / "py"), saved)  # "latest"
    patterns = hl.read("py", data=tmp_path / "py", table="pattern_prompts")
    assert sorted(patterns.prompt) == ["text-000", "text-001"]
    assert hl.manifest("py", data=tmp_path / "py")["probes"]["sink"]["epsilon"] == 0.3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"probes": ["nope"]}, hl.HeadlabError, "unknown probe 'nope'"),
        ({"params": {"sink": {"epsilon": 2.0}}}, hl.ConfigError, "sink.epsilon must be in"),
        ({"params": {"detectors": {}}, "probes": "sink"}, hl.ConfigError, "not selected"),
        ({"prompts": [""]}, hl.HeadlabError, "prompt 0 of the list is not non-empty text"),
        ({"prompts": 42}, hl.ConfigError, "prompts: give None"),
        ({"prompts": "missing.jsonl"}, hl.HeadlabError, "missing.jsonl"),
        ({"batch_size": 0}, hl.ConfigError, "batch_size must be"),
    ],
)
def test_bad_scan_arguments_are_headlab_errors_naming_them(tiny_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        hl.scan(tiny_model, **{"prompts": TEXTS, **kwargs})


def hand_table() -> pd.DataFrame:
    """A tidy table with known values: m1 (one probe), m2 (two probes), alpha per position."""
    rows = [
        {"probe": "a", "metric": "m1", "layer": 0, "head": 0, "value": 0.2},
        {"probe": "a", "metric": "m1", "layer": 0, "head": 1, "value": 0.9},
        {"probe": "a", "metric": "m1", "layer": 1, "head": 0, "value": 0.9},
        {"probe": "a", "metric": "m1", "layer": 1, "head": 1, "value": 0.5},
        {"probe": "a", "metric": "m2", "layer": 0, "head": 0, "value": 1.0},
        {"probe": "b", "metric": "m2", "layer": 0, "head": 0, "value": 2.0},
    ]
    rows += [
        {"probe": "a", "metric": "alpha", "layer": 0, "head": h, "position": k, "value": h + k / 10}
        for h in range(2)
        for k in range(3)
    ]
    return store.conform(pd.DataFrame(rows).assign(run_id="r", model="m"))


def test_top_heads_follow_the_one_ranking_and_name_their_heads():
    table = hand_table()
    top = hl.top_heads(table, "m1", k=3)
    assert top.to_dict("list") == {
        "rank": [1, 2, 3],
        "name": ["L0H1", "L1H0", "L1H1"],  # the tie 0.9 goes to the lower layer
        "layer": [0, 1, 1],
        "head": [1, 0, 1],
        "value": [0.9, 0.9, 0.5],
    }
    assert [tuple(h) for h in hl.top_heads(table, "m1", k=4)[["layer", "head"]].values] == [
        head for head, _ in ranking.rank_heads(table, "m1")
    ]
    assert hl.top_heads(table, "m1", k=1, ascending=True)["name"].tolist() == ["L0H0"]
    assert hl.top_heads(table, "alpha", position=2, k=1).value.tolist() == [1.2]
    assert hl.top_heads(table, "m2", probe="b").value.tolist() == [2.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "nope"}, "no per-head rows for metric 'nope'; the table has"),
        ({"metric": "m2"}, r"comes from probes \['a', 'b'\]: pass probe="),
        ({"metric": "alpha"}, r"per key position \(0…2\): pass position=, e.g. position=0"),
        ({"metric": "m1", "probe": "b"}, "no per-head rows for metric 'm1' of probe 'b'"),
        ({"metric": "m1", "k": 0}, "k must be a whole number ≥ 1"),
    ],
)
def test_a_series_that_is_not_one_says_what_to_pass(kwargs, message):
    with pytest.raises(hl.ConfigError, match=message):
        hl.top_heads(hand_table(), **kwargs)
    if "k" not in kwargs:
        with pytest.raises(hl.ConfigError, match=message):
            hl.plot.head_map(hand_table(), **kwargs)


def test_head_map_draws_the_metric_in_its_layer_head_cells():
    figure = hl.plot.head_map(hand_table(), "alpha", position=1, threshold=1.0)
    assert figure.layout.title.text == "a/alpha at key 1"
    assert figure.data[0].z.tolist() == [[0.1, 1.1]]
    assert list(figure.data[2].x) == [1] and list(figure.data[2].y) == [0]  # ringed: α ≥ 1


def test_pattern_draws_a_heads_attention_on_the_text(tiny_model):
    """A planted head that puts all attention on BOS: every query row is [1, 0, 0, …]."""
    n_tokens = len(tiny_model.tokenize(TEXT))
    with bridge.attached(tiny_model, [planting.bos_head(1, 2)]):
        figure = hl.plot.pattern(tiny_model, "L1H2", TEXT)
    z = torch.tensor(figure.data[0].z, dtype=torch.float64)
    assert z.shape == (n_tokens, n_tokens)  # one token per block
    expected = torch.zeros(n_tokens, n_tokens, dtype=torch.float64)
    expected[:, 0] = 1
    torch.testing.assert_close(z.nan_to_num(0.0), expected, atol=1e-6, rtol=0)
    above = torch.ones(n_tokens, n_tokens, dtype=torch.bool).triu(1)
    assert z[above].isnan().all() and not z[~above].isnan().any()  # above the diagonal: blank
    with pytest.raises(hl.ConfigError, match="pattern: head L5H0 does not exist"):
        hl.plot.pattern(tiny_model, (5, 0), TEXT)


def test_logits_and_loss_are_the_models_own(tiny_model):
    tokens = torch.tensor([tiny_model.tokenize(TEXT)])
    expected = bridge.forward(tiny_model, tokens)[0]
    assert torch.equal(hl.logits(tiny_model, TEXT), expected)
    cross_entropy = torch.nn.functional.cross_entropy(expected[:-1], tokens[0, 1:])
    assert hl.loss(tiny_model, TEXT) == pytest.approx(float(cross_entropy), rel=1e-6)
    with pytest.raises(PromptTooLongError, match="more than the 256-token context"):
        hl.loss(tiny_model, "word " * 300)


def test_ablate_and_reinforce_edit_every_pass_inside_the_block_only(tiny_model):
    clean = hl.logits(tiny_model, TEXT)
    tokens = torch.tensor([tiny_model.tokenize(TEXT)])
    uniform = HeadAblation([(0, 1), (1, 3)], "uniform")
    for block, intervention in [
        (hl.ablate(tiny_model, [1, 2]), HeadAblation([(1, 2)])),  # one head given as a list
        (hl.ablate(tiny_model, ["L0H1", (1, 3)], "uniform"), uniform),
        (hl.reinforce(tiny_model, "L0H0", 3.0), HeadScale([(0, 0)], 3.0)),
    ]:
        expected = bridge.forward(tiny_model, tokens, hooks([intervention], tiny_model.info))[0]
        assert not torch.allclose(expected, clean)
        with block:
            assert torch.equal(hl.logits(tiny_model, TEXT), expected)
        assert torch.equal(hl.logits(tiny_model, TEXT), clean)


def test_mean_ablation_computes_the_means_over_the_prompts_given(tiny_model):
    with hl.ablate(tiny_model, "L1H2", "mean", prompts=TEXTS) as block:
        ablated = hl.logits(tiny_model, TEXT)
    prompts = engine.tokenize_suite(tiny_model, text_suite(TEXTS), 256)
    means = head_means(tiny_model, engine.batches(prompts, 4, tiny_model.pad_id, "cpu"))
    (used,) = block.interventions
    assert isinstance(used, HeadAblation)
    assert used.means is not None and torch.equal(used.means, means)
    tokens = torch.tensor([tiny_model.tokenize(TEXT)])
    expected = bridge.forward(tiny_model, tokens, hooks([used], tiny_model.info))[0]
    assert torch.equal(ablated, expected)
    assert torch.equal(hl.head_means(tiny_model, TEXTS), means)


def test_redistribute_is_act_by_default_and_says_when_that_leaves_bos_alone(tiny_model):
    with bridge.attached(tiny_model, [planting.bos_heavy_head(1, 0)]):
        planted = hl.logits(tiny_model, TEXT)
        with (
            pytest.warns(hl.NoEffectWarning, match="ACT spares the first sink"),
            hl.redistribute(tiny_model, "L1H0"),
        ):
            assert torch.equal(hl.logits(tiny_model, TEXT), planted)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with hl.redistribute(tiny_model, "L1H0", keep=0.4, sources=(0,)):
                assert not torch.allclose(hl.logits(tiny_model, TEXT), planted)


def test_intervene_composes_any_kinds_in_order(tiny_model):
    first, second = hl.HeadScale([(0, 1)], 3.0), hl.SoftPAG([(1, 0)], 1.0)
    tokens = torch.tensor([tiny_model.tokenize(TEXT)])
    expected = bridge.forward(tiny_model, tokens, hooks([first, second], tiny_model.info))[0]
    with hl.intervene(tiny_model, first, second):
        assert torch.equal(hl.logits(tiny_model, TEXT), expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: hl.ablate(m, 18), r"ablate: give one head or a list of heads.*got 18"),
        (lambda m: hl.ablate(m, "L18"), "ablate: a head name is like 'L18H8', got 'L18'"),
        (lambda m: hl.ablate(m, "L9H0"), "head L9H0 does not exist in model 'tiny-random'"),
        (lambda m: hl.ablate(m, "L9H0", "mean"), "ablate: head L9H0 does not exist"),
        (lambda m: hl.ablate(m, "L0H0", "half"), "HeadAblation.mode must be one of"),
        (lambda m: hl.reinforce(m, [(0, 0), (0, 0)]), "reinforce: L0H0 appears more than once"),
        (lambda m: hl.redistribute(m, "L0H0", keep=2), r"keep is a share of attention in \[0, 1\]"),
    ],
)
def test_bad_intervention_arguments_are_config_errors_naming_them(tiny_model, call, message):
    with pytest.raises(hl.ConfigError, match=message):
        call(tiny_model)
    assert bridge.hooked_points(tiny_model) == []


def test_sweep_delegates_to_the_sweep_runner_and_finds_the_planted_head(tmp_path):
    model, pairs = planting.copy_task_model(task_head=(0, 1))
    path = tmp_path / "pairs.jsonl"
    keys = ["id", "text", "correct", "incorrect"]
    lines = [json.dumps(dict(zip(keys, pair, strict=True))) for pair in pairs]
    path.write_text("\n".join(lines) + "\n")
    plan = {"tasks": {"ioi": {"path": str(path)}}, "single_head": {"modes": ["zero"]},
            "batch_size": 8}  # fmt: skip
    table = hl.sweep(plan, model=model, data=tmp_path / "data", run_id="s")
    harm = table[(table.metric == "ioi.logit_diff.harm") & table["head"].notna()]
    assert len(harm) == model.info.n_layers * model.info.n_heads
    top = hl.top_heads(harm.assign(probe="sweep"), "ioi.logit_diff.harm", k=1, condition="zero")
    assert top["name"].tolist() == ["L0H1"]
    pd.testing.assert_frame_equal(table, hl.read("s", data=tmp_path / "data"))
    with pytest.raises(hl.ConfigError, match="plan: give a SweepPlan"):
        hl.sweep(42, model=model, data=tmp_path)


def test_load_refuses_an_unknown_dtype_before_loading():
    with pytest.raises(hl.ConfigError, match="dtype must be one of"):
        hl.load("tiny-random", dtype="float8")


def own_docstring(value: object) -> str:
    """A function's or class's own docstring (a dataclass's generated signature is none)."""
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else inspect.getdoc(value)
    name = getattr(value, "__name__", "")
    return "" if not doc or doc.startswith(f"{name}(") else doc.strip()


def test_every_public_name_is_documented_and_listed():
    assert set(hl.__all__) == set(hl._HOMES) | {"plot"}
    assert set(hl.__all__) <= set(dir(hl))
    undocumented = [name for name in hl.__all__ if not own_docstring(getattr(hl, name))]
    undocumented += [
        f"plot.{name}" for name in hl.plot.__all__ if not own_docstring(getattr(hl.plot, name))
    ]
    assert undocumented == []
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = hl.nope
