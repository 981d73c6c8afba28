import math

import pandas as pd
import pytest
import torch

from probes import engine
from probes.families import sink as sinks
from probes.inputs.prompts import Prompt, PromptSuite, stdlib_docs_suite
from tests import planting
from tests.probes.reference_sinks import act_sink_indices, authors_sink_percentage
from tests.tensors import random_causal_patterns


def uniform_alpha(length: int, k: int) -> float:
    """Closed form for a uniform causal head: query i gives 1/(i+1) to each of its keys."""
    return sum(1 / (i + 1) for i in range(k, length)) / (length - k)


# --- pure maths -------------------------------------------------------------------------------


def test_alpha_matches_authors_transcription_on_random_patterns():
    patterns = random_causal_patterns(3, 2, 5, 12, 12)  # samples, layers, heads, T, T
    ours = torch.stack(
        [
            torch.stack(
                [
                    sinks.sink_alpha(patterns[s, layer][None], torch.tensor([12]))[0]
                    for layer in range(2)
                ]
            )
            for s in range(3)
        ]
    )
    for epsilon in (0.05, 0.1, 0.3):
        mine = (ours > epsilon).float().mean(dim=(0, 1, 2)) * 100
        torch.testing.assert_close(mine, authors_sink_percentage(patterns, epsilon))


def test_alpha_of_uniform_head_has_closed_form():
    length = 9
    causal = torch.ones(length, length).tril()
    pattern = (causal / causal.sum(-1, keepdim=True))[None, None]
    alpha = sinks.sink_alpha(pattern, torch.tensor([length]))[0, 0]
    expected = torch.tensor([uniform_alpha(length, k) for k in range(length)])
    torch.testing.assert_close(alpha, expected.to(alpha.dtype))


def test_alpha_ignores_padding_rows_and_marks_padding_keys_nan():
    short, long = 5, 8
    pattern = random_causal_patterns(2, 3, long, long, seed=1)
    # Garbage in the padding rows of the short sequence must not matter.
    pattern[0, :, short:, :] = 0.5
    alpha = sinks.sink_alpha(pattern, torch.tensor([short, long]))
    alone = sinks.sink_alpha(pattern[:1, :, :short, :short], torch.tensor([short]))
    torch.testing.assert_close(alpha[0, :, :short], alone[0])
    assert torch.isnan(alpha[0, :, short:]).all()
    assert not torch.isnan(alpha[1]).any()


def test_hidden_sinks_match_act_detection_beyond_position_zero():
    pattern = random_causal_patterns(4, 10, 10, seed=2)
    alpha = sinks.sink_alpha(pattern[None], torch.tensor([10]))[0]
    mask = sinks.hidden_sink_mask(alpha[None], threshold=0.1)[0]
    for head in range(4):
        expected = act_sink_indices(pattern[head], 0.1)
        expected = expected[expected > 0]
        assert torch.equal(torch.nonzero(mask[head]).flatten(), expected)


def test_massive_activation_ratio_finds_the_planted_spike():
    resid = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    resid[0, 0, 3] = 500.0  # a massive activation on the sink token of sequence 0 only
    sink_ratio, other_ratio = sinks.massive_activation_ratio(resid, torch.tensor([6, 6]))
    median = resid[0].abs().median()
    assert sink_ratio[0] == pytest.approx(500.0 / median.item(), rel=1e-5)
    assert sink_ratio[0] > 100 * other_ratio[0]
    assert sink_ratio[1] < 10  # negative case: no spike, no massive ratio


# --- planted heads in a tiny model, through the engine --------------------------------------


def suite_of(texts: list[str]) -> PromptSuite:
    return PromptSuite("t", tuple(Prompt(f"p{i}", text) for i, text in enumerate(texts)), "test")


TEXTS = [
    "the cat went to the park and the dog went to the store",
    "mary gave the ball to john",
    "the capital of france is paris and the river is long",
]


def run_planted(model, planted_hooks, params=None) -> pd.DataFrame:
    probe = sinks.SinkProbe(model.info, params)
    suite = suite_of(TEXTS)
    prompts = engine.tokenize_suite(model, suite, max_tokens=None)
    for batch in engine.batches(prompts, 2, model.tokenizer.pad_token_id, model.device):
        engine.run_batch(model, batch, [probe], planted_hooks)
    return pd.DataFrame(probe.rows())


def value(rows: pd.DataFrame, metric: str, layer: int, head: int, position: int | None = None):
    match = (rows.metric == metric) & (rows.layer == layer) & (rows["head"] == head)
    if position is not None:
        match &= rows.position == position
    (result,) = rows[match].value
    return result


def test_planted_bos_head_is_a_sink_with_alpha_one(tiny_model):
    rows = run_planted(tiny_model, [planting.bos_head(1, 2)])
    assert value(rows, "alpha", 1, 2, 0) == pytest.approx(1.0, abs=1e-6)
    assert value(rows, "sink_rate", 1, 2, 0) == 1.0
    assert value(rows, "alpha", 1, 2, 1) == pytest.approx(0.0, abs=1e-6)
    assert value(rows, "hidden_sink_count", 1, 2) == 0.0


def test_planted_uniform_head_has_closed_form_alpha(tiny_model):
    rows = run_planted(tiny_model, [planting.uniform_head(0, 1)])
    lengths = [len(tiny_model.tokenize(text)) for text in TEXTS]
    for k in range(3):
        expected = sum(uniform_alpha(length, k) for length in lengths) / len(lengths)
        assert value(rows, "alpha", 0, 1, k) == pytest.approx(expected, rel=1e-5)
    # A uniform head sinks on token 0 exactly when H_T / T > ε: only in the short prompt here.
    verdicts = [uniform_alpha(length, 0) > 0.3 for length in lengths]
    assert verdicts == [False, True, False]
    assert value(rows, "sink_rate", 0, 1, 0) == pytest.approx(1 / 3)


def test_planted_previous_token_head_is_not_a_sink(tiny_model):
    rows = run_planted(tiny_model, [planting.previous_token_head(0, 3)])
    lengths = [len(tiny_model.tokenize(text)) for text in TEXTS]
    # Position 0 gets row 0 (itself) and row 1: α_0 = 2 / T.
    expected = sum(2 / length for length in lengths) / len(lengths)
    assert value(rows, "alpha", 0, 3, 0) == pytest.approx(expected, rel=1e-5)
    assert value(rows, "sink_rate", 0, 3, 0) == 0.0


def test_epsilon_parameter_changes_the_verdict(tiny_model):
    strict = run_planted(tiny_model, [planting.uniform_head(0, 1)], sinks.SinkParams(epsilon=0.0))
    assert value(strict, "sink_rate", 0, 1, 0) == 1.0


def test_rows_cover_every_head_and_layer_level_massive_rows(tiny_model):
    rows = run_planted(tiny_model, [])
    info = tiny_model.info
    heads = rows[rows.metric == "alpha"][["layer", "head"]].drop_duplicates()
    assert len(heads) == info.n_layers * info.n_heads
    massive = rows[rows.metric == "massive_ratio"]
    assert set(massive.condition) == {"sink_token", "other_tokens"}
    assert len(massive) == 2 * info.n_layers
    assert rows.value.notna().all()


@pytest.mark.slow
def test_real_model_has_first_token_sinks_and_massive_activations(smollm2):
    probe = sinks.SinkProbe(smollm2.info)
    table = engine.run(smollm2, [probe], stdlib_docs_suite(4, 120), max_tokens=96, progress=False)
    first = table[(table.metric == "sink_rate") & (table.position == 0)]
    assert len(first) == 270
    # Gu et al. find first-token sinks in most heads of pretrained LMs; a random model has none.
    assert first.value.mean() > 0.2
    ratio = table[(table.metric == "massive_ratio") & (table.condition == "sink_token")]
    assert ratio.value.max() > 100
    assert math.isfinite(table.value.sum())


@pytest.mark.parametrize("shape", [(7,), (8,), (6, 5), (1,), (4, 4)])
def test_lower_median_is_torch_median_for_odd_and_even_counts(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    values = torch.randint(0, 5, shape, generator=generator).float()  # ties too
    values += torch.rand(shape, generator=generator) * (
        torch.rand(shape, generator=generator) > 0.5
    )
    assert sinks.lower_median(values).item() == values.median().item()


def test_add_received_sums_real_query_rows_into_the_first_keys_only():
    generator = torch.Generator().manual_seed(3)
    rows = torch.rand(2, 3, 4, 5, generator=generator)
    real = torch.tensor([[True, True, True, True, True], [True, True, False, False, False]])
    received = torch.ones(2, 3, 7)
    sinks.add_received(received, rows, real)
    expected = 1 + torch.einsum("bhqk,bq->bhk", rows, real[:, :4].float())
    torch.testing.assert_close(received[..., :5], expected)
    assert (received[..., 5:] == 1).all()  # keys past the rows receive nothing
