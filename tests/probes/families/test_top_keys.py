"""The top_keys probe: the top-k keys of every query, on planted heads, against torch.topk of the
whole pattern, within its size bound, and read back the way the dashboard reads it."""

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.results import store
from dashboard import data
from probes import bridge, engine
from probes.core import hook_names, schema
from probes.core.errors import ConfigError
from probes.families import top_keys as tk
from probes.families.top_keys import TopKeysParams, TopKeysProbe
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting
from tests.tensors import random_causal_patterns

TEXTS = [
    "the cat went to the park and the dog went to the store and the cat came back home",
    "mary gave the ball to john",
    "the capital of france is paris and the river is long",
]
STEP = 1 / schema.TOP_KEYS_WEIGHT_STEPS  # a stored weight is within STEP / 2 of the true one


def suite_of(texts: list[str]) -> PromptSuite:
    return PromptSuite("t", tuple(Prompt(f"p{i}", text) for i, text in enumerate(texts)), "test")


def run(model, params: TopKeysParams, plants=(), path: str = "auto", batch_size: int = 2):
    """The probe's rows and side tables; planted runs take the bridge path (plants act there)."""
    probe = TopKeysProbe(model.info, params)
    with planting.planted(model, plants):
        rows = engine.run(
            model, [probe], suite_of(TEXTS), batch_size=batch_size, progress=False, path=path
        )
    return rows, probe.tables()


def entries(tables, prompt: str, layer: int, head: int) -> list[list[tuple[int, float]]]:
    """Per query, the stored (key, weight) pairs, weights dequantized."""
    (k,) = tables[schema.TOP_KEYS_PROMPTS_TABLE].set_index("prompt").loc[[prompt], "k"]
    table = tables[schema.TOP_KEYS_TABLE]
    row = table[(table.prompt == prompt) & (table.layer == layer) & (table["head"] == head)]
    keys, weights = row["keys"].iloc[0], tk.dequantized(row["weights"].iloc[0])
    found, start, query = [], 0, 0
    while start < len(keys):
        count = min(k, query + 1)
        found.append(
            list(
                zip(
                    keys[start : start + count].tolist(),
                    weights[start : start + count].tolist(),
                    strict=True,
                )
            )
        )
        start, query = start + count, query + 1
    return found


def mass(rows: pd.DataFrame, layer: int, head: int) -> float:
    (value,) = rows[(rows.layer == layer) & (rows["head"] == head)]["value"]
    return float(value)


# --- pure maths -------------------------------------------------------------------------------


def test_top_keys_of_hand_made_rows_rank_only_keys_the_query_can_see():
    # Queries 2 and 3 of a sequence (q_start = 2) over 4 visible keys; key 3 lies past query 2.
    rows = torch.tensor([[[0.1, 0.6, 0.3, 0.0], [0.4, 0.1, 0.2, 0.3]]])
    keys, weights = tk.top_keys(rows, q_start=2, k=3)
    assert keys.tolist() == [[[1, 2, 0], [0, 3, 2]]]
    torch.testing.assert_close(weights, torch.tensor([[[0.6, 0.3, 0.1], [0.4, 0.3, 0.2]]]))
    # Query 0 sees key 0 only: a key past it ranks last (weight -1), never before a real key.
    keys, weights = tk.top_keys(torch.tensor([[[1.0, 0.0, 0.0]]]), q_start=0, k=2)
    assert keys.tolist() == [[[0, 1]]] and weights[0, 0, 1] < 0
    # Fewer visible keys than k (a short chunk): as many as there are.
    assert tk.top_keys(torch.rand(2, 3, 2), q_start=1, k=8)[0].shape == (2, 3, 2)


def masked_full_topk(rows: torch.Tensor, q_start: int, k: int, k_start: int = 0):
    """The reference (the old formula): torch.topk of the whole band, future keys set to -1."""
    n_queries, visible = rows.shape[-2:]
    queries = torch.arange(q_start, q_start + n_queries)[:, None]
    future = torch.arange(k_start, k_start + visible)[None, :] > queries
    ranked = rows.float().masked_fill(future, -1.0)
    weights, keys = torch.topk(ranked, min(k, visible), dim=-1, sorted=True)
    return keys + k_start, weights


def assert_same_top_keys(rows: torch.Tensor, q_start: int, k: int, k_start: int = 0) -> None:
    """top_keys against the reference: identical weights; identical keys wherever the weight is
    held by one key only (tied weights may come with other keys), each key once and carrying
    its weight (-1 for a key past the query)."""
    before = rows.clone()
    keys, weights = tk.top_keys(rows, q_start, k, k_start)
    expected_keys, expected_weights = masked_full_topk(rows, q_start, k, k_start)
    assert torch.equal(rows, before)  # the caller's rows are left as they were
    assert weights.dtype == torch.float32 and torch.equal(weights, expected_weights)
    queries = torch.arange(q_start, q_start + rows.shape[-2])[:, None]
    ranked = rows.float().masked_fill(torch.arange(k_start, k_start + rows.shape[-1]) > queries, -1)
    carried = ranked.gather(-1, keys - k_start)
    assert torch.equal(carried, weights)
    assert bool((keys.sort(-1).values.diff(dim=-1) > 0).all())  # no key twice
    once = (ranked[..., None, :] == weights[..., None]).sum(-1) == 1
    assert torch.equal(keys[once], expected_keys[once])


def random_rows(shape: tuple[int, ...], seed: int, ties: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.rand(*shape, generator=generator) ** 4  # mostly small, a few large weights
    rows[torch.rand(*shape, generator=generator) < 0.3] = 0.0  # exact zeros (masked keys)
    return (rows * 8).round() / 8 if ties else rows  # ties: only 9 distinct weights


@pytest.mark.parametrize(
    ("n_queries", "visible", "q_start", "k_start", "k"),
    [
        (64, 64, 0, 0, 8),  # the first chunk: only the diagonal block
        (64, 4096, 4032, 0, 8),  # a late fast-path chunk: 63 blocks of 64 keys before it
        (64, 1000, 936, 0, 8),  # a band width that is no multiple of the block
        (17, 1000, 900, 0, 8),  # a short last chunk, keys past every query at its end
        (1, 777, 776, 0, 8),  # a chunk of one row
        (1, 777, 700, 0, 64),  # k = MAX_K
        (5, 3, 0, 0, 8),  # fewer keys than k
        (4, 700, 2, 0, 8),  # queries that see fewer than k keys among many future ones
        (64, 900, 1900, 1000, 8),  # a band of keys k_start… (a sliding window)
        (64, 1200, 1500, 400, 3),  # ... whose diagonal block starts mid-band
        (64, 50, 10, 20, 8),  # a band starting past the first queries
        (64, 640, 576, 0, 8),  # exactly k + 1 blocks before the chunk (the fewest skipped)
        (64, 639, 575, 0, 8),  # one key fewer: every column ranked
        (300, 300, 0, 0, 5),  # a whole pattern (the bridge path): cut into query blocks
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_top_keys_equal_the_masked_full_topk(n_queries, visible, q_start, k_start, k, ties):
    rows = random_rows((3, n_queries, visible), seed=n_queries + visible + k, ties=ties)
    assert_same_top_keys(rows, q_start, k, k_start)


def test_top_keys_of_all_zero_rows_and_low_precision_rows_equal_the_reference():
    assert_same_top_keys(torch.zeros(2, 64, 2000), 1936, 8)  # every weight tied
    rows = random_rows((2, 64, 2000), seed=3).to(torch.bfloat16)
    assert_same_top_keys(rows, 1936, 8)
    assert_same_top_keys(random_rows((1, 2, 64, 1500), seed=4), 1436, 8)  # a batch dimension


def test_planted_top_keys_are_found_in_every_part_of_the_band_but_not_past_the_query():
    """Query 1000 of a chunk from query 980 over 1,064 keys: its planted top keys lie in one
    block (three of them), in far blocks, in the remainder (keys 960…979) before the chunk and in
    the diagonal block; a larger weight on a key past it (negative) is never picked."""
    q_start, query = 980, 1000
    rows = torch.full((1, 64, 1064), 1e-4)
    planted = {5: 0.30, 130: 0.20, 131: 0.15, 140: 0.10, 700: 0.08, 970: 0.06, 990: 0.04}
    planted |= {query: 0.02}
    for key, weight in planted.items():
        rows[0, query - q_start, key] = weight
    rows[0, query - q_start, query + 1] = 0.9  # past the query
    keys, weights = tk.top_keys(rows, q_start, k=8)
    assert keys[0, query - q_start].tolist() == list(planted)
    torch.testing.assert_close(weights[0, query - q_start], torch.tensor(list(planted.values())))
    assert_same_top_keys(rows, q_start, 8)


@pytest.mark.parametrize(("length", "k"), [(1, 8), (5, 8), (8, 8), (9, 8), (2048, 8), (300, 1)])
def test_entries_per_head_is_the_closed_form(length, k):
    expected = length * (length + 1) // 2 if length <= k else k * length - k * (k - 1) // 2
    assert tk.entries_per_head(length, k) == expected


def test_the_stated_size_of_a_smollm2_prompt_at_2k_tokens():
    """30 layers × 9 heads, T = 2,048, k = 8: 4,416,120 entries of 3 bytes (the docstring's)."""
    assert 30 * 9 * tk.entries_per_head(2048, 8) == 4_416_120
    assert tk.stored_bytes(30, 9, 2048, 8) == 13_248_360
    assert tk.stored_bytes(30, 9, 256, 8) == 1_636_200
    assert tk.stored_bytes(1, 1, 70_000, 1) == 70_000 * 5  # int32 keys past 65,536 tokens


def test_quantized_weights_are_within_half_a_step():
    weights = random_causal_patterns(2, 16, 16).flatten().numpy()
    back = tk.dequantized(tk.quantized(weights))
    assert np.abs(back - weights).max() <= STEP / 2 + 1e-7
    assert tk.quantized(np.array([0.0, 1.0, 1.5, -0.1])).tolist() == [0, 255, 255, 0]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"k": 0}, "k"), ({"k": tk.MAX_K + 1}, "k"), ({"n_prompts": 0}, "n_prompts")],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        TopKeysParams(**params)


# --- planted heads in the tiny model, through the engine ------------------------------------


def test_a_planted_previous_token_head_stores_the_previous_token_with_all_the_weight(tiny_model):
    rows, tables = run(tiny_model, TopKeysParams(k=3, n_prompts=3),
                       [planting.previous_token_head(1, 2)], path="bridge")  # fmt: skip
    for prompt in ("p0", "p1", "p2"):
        per_query = entries(tables, prompt, 1, 2)
        assert per_query[0] == [(0, 1.0)]
        for query, pairs in enumerate(per_query[1:], start=1):
            assert len(pairs) == min(3, query + 1)
            assert pairs[0] == (query - 1, 1.0)
            assert all(weight == 0 and key <= query for key, weight in pairs[1:])
    assert mass(rows, 1, 2) == pytest.approx(1.0, abs=1e-6)


def test_a_planted_three_key_head_stores_those_keys_at_a_third_each(tiny_model):
    def keys_of(query: int) -> list[int]:
        return sorted({0, query // 2, query})

    plant = planting.attend_uniform(0, 1, keys_of)
    _, tables = run(tiny_model, TopKeysParams(k=4, prompt_ids=("p0",)), [plant], path="bridge")
    for query, pairs in enumerate(entries(tables, "p0", 0, 1)):
        wanted = keys_of(query)
        assert sorted(key for key, _ in pairs[: len(wanted)]) == wanted
        top = [weight for _, weight in pairs[: len(wanted)]]
        np.testing.assert_allclose(top, 1 / len(wanted), atol=STEP / 2)
        assert all(weight == 0 for _, weight in pairs[len(wanted) :])


def test_negative_a_uniform_head_spreads_thin_and_its_top_keys_hold_a_known_share(tiny_model):
    """Planted negative: a uniform head's strongest key gets 1/(q+1), not a previous-token
    head's 1, and its top k keys hold min(k, q+1)/(q+1) of each query's attention."""
    k = 4
    plants = [planting.uniform_head(1, 0), planting.previous_token_head(1, 2)]
    rows, tables = run(tiny_model, TopKeysParams(k=k, n_prompts=3), plants, path="bridge")
    shares = []
    for prompt in ("p0", "p1", "p2"):
        for query, pairs in enumerate(entries(tables, prompt, 1, 0)):
            np.testing.assert_allclose([w for _, w in pairs], 1 / (query + 1), atol=STEP / 2)
            shares.append(min(k, query + 1) / (query + 1))
        late = entries(tables, prompt, 1, 0)[-1]
        assert late[0][1] <= 1 / 7 + STEP  # every prompt has ≥ 7 tokens: far from 1.0
    assert mass(rows, 1, 0) == pytest.approx(np.mean(shares), abs=1e-6)
    assert mass(rows, 1, 0) < mass(rows, 1, 2) - 0.3


def test_prompts_asked_for_but_never_fed_are_an_error(tiny_model):
    with pytest.raises(ConfigError, match="never fed"):
        run(tiny_model, TopKeysParams(prompt_ids=("p0", "nope")))


# --- the fast path against the whole pattern --------------------------------------------------


def full_patterns(model, text_ids: list[int]) -> dict[int, torch.Tensor]:
    """Every layer's whole [head, q, k] pattern, from the bridge's hook_pattern."""
    found: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(pattern, hook):
            found[layer] = pattern[0].detach().clone()

        return hook

    hooks = [
        (hook_names.attn(layer, "pattern"), keep(layer)) for layer in range(model.info.n_layers)
    ]
    bridge.forward(model, torch.tensor([text_ids]), hooks, return_type=None)
    return found


@pytest.mark.parametrize("path", ["fast", "bridge"])
def test_stored_top_keys_equal_torch_topk_of_the_bridge_pattern(tiny_model, path):
    k = 5
    _, tables = run(tiny_model, TopKeysParams(k=k, n_prompts=3), path=path, batch_size=3)
    for prompt in ("p0", "p1", "p2"):
        ids = list(tables[schema.TOP_KEYS_PROMPTS_TABLE].set_index("prompt").loc[prompt, "ids"])
        for layer, pattern in full_patterns(tiny_model, ids).items():
            for head in range(tiny_model.info.n_heads):
                for query, pairs in enumerate(entries(tables, prompt, layer, head)):
                    row = pattern[head, query, : query + 1].float()
                    expected = torch.topk(row, min(k, query + 1)).values
                    keys = [key for key, _ in pairs]
                    assert len(set(keys)) == len(keys) and max(keys) <= query
                    # The stored keys carry the top-k weights in order (ties may swap keys) ...
                    torch.testing.assert_close(row[keys], expected, atol=1e-5, rtol=0)
                    # ... and the stored weights are those, quantized.
                    stored = torch.tensor([weight for _, weight in pairs])
                    assert (stored - expected).abs().max() <= STEP / 2 + 1e-5


# --- size bound and reading back ----------------------------------------------------------------


def test_the_side_tables_hold_exactly_the_bound_and_read_back_as_the_dashboard_reads(
    tiny_model, tmp_path
):
    params = TopKeysParams(k=3, n_prompts=2)
    rows, tables = run(tiny_model, params)
    prompts = tables[schema.TOP_KEYS_PROMPTS_TABLE]
    table = tables[schema.TOP_KEYS_TABLE]
    info = tiny_model.info
    assert len(table) == len(prompts) * info.n_layers * info.n_heads
    for record in prompts.itertuples():
        chosen = table[table.prompt == record.prompt]
        nbytes = sum(a.nbytes for a in chosen["keys"]) + sum(a.nbytes for a in chosen["weights"])
        assert nbytes == tk.stored_bytes(info.n_layers, info.n_heads, record.length, 3)
        assert {a.dtype for a in chosen["keys"]} == {np.dtype("uint16")}
        assert {a.dtype for a in chosen["weights"]} == {np.dtype("uint8")}
    assert len(rows) == info.n_layers * info.n_heads  # one top_k_mass per head

    store.write_run(tmp_path, "r", rows.assign(model="tiny-random"), {"model": {}}, tables)
    read = data.load_top_keys_prompts(tmp_path, "r")
    assert sorted(read) == sorted(prompts["prompt"])
    prompt = read["p1"]
    assert prompt.k == 3 and prompt.length == len(prompts.set_index("prompt").loc["p1", "ids"])
    (l0h1, l1h3) = data.load_head_top_keys(tmp_path, "r", prompt, [(0, 1), (1, 3)])
    assert (l0h1.name, l1h3.name) == ("L0H1", "L1H3")  # in the order asked for, nothing else
    expected = entries(tables, "p1", 1, 3)
    for query in range(prompt.length):
        got = l1h3.of_query(query, prompt.k)
        assert [key for key, _ in got] == [key for key, _ in expected[query]]
        np.testing.assert_allclose([w for _, w in got], [w for _, w in expected[query]])
