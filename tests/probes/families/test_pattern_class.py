import pandas as pd
import pytest
import torch

from probes import engine
from probes.families.pattern_class import (
    PatternClassParams,
    PatternClassProbe,
    candidate_masks,
    classify,
    key_budget,
    mask_recall,
)
from probes.inputs.prompts import Prompt, PromptSuite
from probes.models.tiny import word_vocabulary
from tests import planting
from tests.tensors import random_causal_patterns

WORDS = [w for w in word_vocabulary() if w.isalpha() and len(w) > 2]


def text_of(n_words: int, seed: int) -> str:
    generator = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n_words,), generator=generator))


SUITE = PromptSuite(
    "t",
    (
        Prompt("long", text_of(199, 0)),
        Prompt("short", text_of(170, 1)),
        Prompt("tiny", text_of(20, 2)),
    ),
    "test",
)


# --- transcriptions of MInference's search_pattern (microsoft/MInference) ----------------------


def minference_stream_llm_recall(attn, first_query, vertical_size, slash_size):
    """`stream_llm`: band 0 ≤ q − k ≤ slash_size plus the first vertical_size columns; recall =
    mean over the scored queries of the attention the mask keeps."""
    q_len = attn.shape[-1]
    mask = torch.triu(torch.tril(torch.ones(q_len, q_len), 0), -slash_size)
    mask[:, :vertical_size] = 1
    est = torch.tril(mask)
    return (attn * est)[first_query:].sum(-1).mean(-1)


def minference_vertical_slash_recall(attn, last_q, vertical_size, slash_size, forced):
    """`vertical_and_slash`: top columns and diagonals of the last `last_q` queries' attention,
    the first `forced` columns and nearest `forced` diagonals always in; recall on those queries."""
    q_len = attn.shape[-1]
    qk = attn[-last_q:]
    vertical = qk.sum(0)
    vertical[:forced] = float("inf")
    keep_columns = vertical.topk(vertical_size).indices
    slash = torch.zeros(q_len)  # slash[d] = attention on diagonal q − k = d
    for row, query in enumerate(range(q_len - last_q, q_len)):
        for key in range(query + 1):
            slash[query - key] += qk[row, key]
    slash[:forced] = float("inf")
    keep_lags = slash.topk(slash_size).indices
    est = torch.zeros(q_len, q_len)
    est[:, keep_columns] = 1
    for lag in keep_lags.tolist():
        est += torch.diag(torch.ones(q_len - lag), -lag)
    est = torch.tril((est > 0).float())
    return (attn * est)[-last_q:].sum(-1).mean(-1)


def test_sink_mask_recall_equals_minference_stream_llm():
    attn = random_causal_patterns(3, 40, 40, seed=3)
    first, n_init, band = 24, 3, 7
    rows = attn[:, first:]
    masks = candidate_masks(rows, first, budget=n_init + band + 1, n_init=n_init, block_size=8)
    ours = mask_recall(rows, masks["sink"])
    for head in range(3):
        expected = minference_stream_llm_recall(attn[head], first, n_init, band)
        assert ours[head].item() == pytest.approx(expected.item(), abs=1e-6)


def test_vertical_slash_recall_equals_minference_vertical_and_slash():
    attn = random_causal_patterns(3, 48, 48, seed=4)
    last_q, first = 16, 32
    rows = attn[:, first:]
    masks = candidate_masks(rows, first, budget=12, n_init=2, block_size=8)
    ours = mask_recall(rows, masks["vertical_slash"])
    for head in range(3):
        expected = minference_vertical_slash_recall(attn[head], last_q, 6, 6, forced=2)
        assert ours[head].item() == pytest.approx(expected.item(), abs=1e-6)


def test_every_mask_keeps_its_budget_and_recall_is_a_share():
    attn = random_causal_patterns(2, 64, 64, seed=5)
    first, budget = 40, 16
    rows = attn[:, first:]
    masks = candidate_masks(rows, first, budget, n_init=4, block_size=8)
    for name in ("local", "sink", "vertical_slash", "block_sparse"):
        kept = masks[name].sum(-1)
        assert kept.max() <= budget, name
        recall = mask_recall(rows, masks[name])
        assert ((recall >= 0) & (recall <= 1 + 1e-6)).all(), name
    assert (masks["local"].sum(-1) == budget).all()  # queries ≥ budget see `budget` keys
    full = torch.ones_like(rows, dtype=torch.bool)
    torch.testing.assert_close(mask_recall(rows, full), torch.ones(2))  # rows sum to 1


def test_classify_prefers_the_simplest_sufficient_mask():
    recall = {"local": 0.95, "sink": 0.97, "vertical_slash": 0.99, "block_sparse": 0.99}
    assert classify(recall, 0.9) == "local"
    assert classify({**recall, "local": 0.5}, 0.9) == "sink"
    assert classify({k: 0.5 for k in recall}, 0.9) == "diffuse"


def test_key_budget_scales_with_the_prompt():
    assert key_budget(256, 0.125, 4) == 32
    assert key_budget(16, 0.125, 4) == 5


# --- planted heads through the engine -----------------------------------------------------------


def block_keys(query: int) -> range:
    """Uniform over the 16-token block six blocks back (BOS before there is one)."""
    block = query // 16 - 6
    return range(16 * block, 16 * block + 16) if block >= 0 else range(1)


PLANTS = {
    (0, 0): planting.previous_token_head(0, 0),
    (0, 1): planting.bos_head(0, 1),
    (0, 2): planting.attend_uniform(0, 2, lambda q: sorted({0, q})),  # A-shape: BOS + itself
    (0, 3): planting.attend_to(0, 3, lambda q: 37 if q >= 37 else 0),  # one distant column
    (1, 0): planting.attend_uniform(1, 0, block_keys),
    (1, 1): planting.uniform_head(1, 1),
}
EXPECTED = {
    (0, 0): "local",
    (0, 1): "sink",
    (0, 2): "sink",
    (0, 3): "vertical_slash",
    (1, 0): "block_sparse",
    (1, 1): "diffuse",
}


def run(model, plants) -> pd.DataFrame:
    with planting.planted(model, plants):
        return engine.run(
            model,
            [PatternClassProbe(model.info)],
            SUITE,
            batch_size=2,
            max_tokens=None,
            progress=False,
        )


def value(rows: pd.DataFrame, metric: str, layer: int, head: int) -> float:
    (result,) = rows[(rows.metric == metric) & (rows.layer == layer) & (rows["head"] == head)].value
    return result


def test_planted_heads_get_their_class(tiny_model):
    rows = run(tiny_model, list(PLANTS.values()))
    classes = rows[rows.metric == "pattern_class"]
    found = {(int(r.layer), int(r["head"])): r.condition for _, r in classes.iterrows()}
    for head, expected in EXPECTED.items():
        assert found[head] == expected, head
    assert value(rows, "recall_local", 0, 0) == pytest.approx(1.0, abs=1e-6)
    assert value(rows, "recall_sink", 0, 1) == pytest.approx(1.0, abs=1e-6)
    # the negative cases: the other masks miss what a planted head does
    assert value(rows, "recall_local", 0, 1) == pytest.approx(0.0, abs=1e-6)
    assert value(rows, "recall_local", 0, 2) == pytest.approx(0.5, abs=1e-6)
    assert value(rows, "recall_sink", 0, 3) == pytest.approx(0.0, abs=1e-6)
    assert value(rows, "recall_vertical_slash", 1, 0) < 0.75
    assert value(rows, "recall_block_sparse", 1, 0) == pytest.approx(1.0, abs=1e-6)
    assert value(rows, "recall_vertical_slash", 1, 1) < 0.5


def test_short_prompts_are_not_profiled(tiny_model):
    probe = PatternClassProbe(tiny_model.info, PatternClassParams(min_length=500))
    rows = engine.run(tiny_model, [probe], SUITE, max_tokens=None, progress=False)
    assert rows.empty or rows.metric.isna().all()


@pytest.mark.slow
def test_smollm2_local_class_heads_are_local_by_attention_distance(smollm2):
    """Two probes, two definitions of "local": every head whose attention a diagonal band
    explains is among the 30 % of heads that look back least."""
    from probes.families.future_attention import FutureAttentionProbe
    from probes.inputs.prompts import stdlib_docs_suite

    probes = [PatternClassProbe(smollm2.info), FutureAttentionProbe(smollm2.info)]
    rows = engine.run(smollm2, probes, stdlib_docs_suite(3, 150), max_tokens=160, progress=False)
    classes = rows[rows.metric == "pattern_class"].set_index(["layer", "head"]).condition
    locality = rows[rows.metric == "locality"].set_index(["layer", "head"]).condition
    local_class = classes[classes == "local"].index
    assert len(local_class) >= 1
    assert (locality[local_class] == "local").all()
    assert (classes.loc[0] == "diffuse").all()  # layer 0 spreads its attention
