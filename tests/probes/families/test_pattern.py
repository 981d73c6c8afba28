import pandas as pd
import pytest
import torch

from analyses.results import store
from dashboard import data
from probes import engine
from probes.core.types import Batch
from probes.families import pattern as pattern_snapshots
from probes.families.pattern import PatternParams, PatternSnapshotProbe
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting
from tests.tensors import random_causal_patterns


def pooled_by_loops(pattern: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Test-only transcription of the definition: mean over the block's queries of the mass
    sent to the key block, cell by cell."""
    length = pattern.shape[-1]
    ends = [*starts[1:], length]
    out = torch.zeros(pattern.shape[0], len(starts), len(starts), dtype=torch.float64)
    for h in range(pattern.shape[0]):
        for qb, (q0, q1) in enumerate(zip(starts, ends, strict=True)):
            for kb, (k0, k1) in enumerate(zip(starts, ends, strict=True)):
                out[h, qb, kb] = sum(float(pattern[h, q, k0:k1].sum()) for q in range(q0, q1)) / (
                    q1 - q0
                )
    return out


# --- pure maths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "max_blocks"),
    [(1, 32), (7, 32), (32, 32), (33, 32), (128, 32), (1000, 64), (100, 3)],
)
def test_block_starts_cover_the_sequence_in_near_equal_blocks(length, max_blocks):
    starts = pattern_snapshots.block_starts(length, max_blocks)
    assert len(starts) == min(length, max_blocks)
    assert starts[0] == 0
    sizes = [b - a for a, b in zip(starts, [*starts[1:], length], strict=True)]
    assert min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1


def test_block_starts_refuse_empty_input():
    with pytest.raises(ValueError, match="length"):
        pattern_snapshots.block_starts(0, 8)


def test_pooling_matches_the_loop_definition_and_keeps_rows_summing_to_one():
    pattern = random_causal_patterns(3, 23, 23)
    starts = pattern_snapshots.block_starts(23, 6)
    pooled = pattern_snapshots.pool_pattern(pattern, starts)
    torch.testing.assert_close(pooled.double(), pooled_by_loops(pattern, starts))
    torch.testing.assert_close(pooled.sum(-1), torch.ones(3, 6))
    above_diagonal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert (pooled[:, above_diagonal] == 0).all()  # causal: nothing flows to later blocks


def test_one_token_blocks_reproduce_the_pattern_exactly():
    pattern = random_causal_patterns(2, 9, 9, seed=1)
    pooled = pattern_snapshots.pool_pattern(pattern, pattern_snapshots.block_starts(9, 64))
    torch.testing.assert_close(pooled, pattern)


def test_max_blocks_is_capped():
    with pytest.raises(ValueError, match="max_blocks"):
        PatternParams(max_blocks=pattern_snapshots.MAX_BLOCKS + 1)


# --- planted heads in the tiny model, through the engine ------------------------------------

TEXTS = [
    "the cat went to the park and the dog went to the store and the cat came back home",
    "mary gave the ball to john",
    "the capital of france is paris and the river is long",
]


def suite_of(texts: list[str]) -> PromptSuite:
    return PromptSuite("t", tuple(Prompt(f"p{i}", text) for i, text in enumerate(texts)), "test")


def snapshot_table(model, plants, params: PatternParams, path: str = "bridge") -> pd.DataFrame:
    """Planting hooks act on the bridge's attention scores, so planted runs take that path."""
    probe = PatternSnapshotProbe(model.info, params)
    with planting.planted(model, plants):
        table = engine.run(model, [probe], suite_of(TEXTS), batch_size=2, progress=False, path=path)
    return table


def snapshot(model, plants, params: PatternParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows and the side table of stored prompts (tokens, block starts)."""
    probe = PatternSnapshotProbe(model.info, params)
    with planting.planted(model, plants):
        table = engine.run(model, [probe], suite_of(TEXTS), batch_size=2, progress=False)
    return table, probe.tables()["pattern_prompts"]


def pooled_of(table: pd.DataFrame, prompt: str, layer: int, head: int, n_blocks: int):
    rows = table[(table.metric == "attention") & (table.layer == layer) & (table["head"] == head)]
    matrix = torch.zeros(n_blocks, n_blocks, dtype=torch.float64)
    rows = rows[rows["prompt"] == prompt]
    for position, key, value in rows[["position", "key_position", "value"]].itertuples(index=False):
        matrix[int(position), int(key)] = value
    return matrix


def tokens_of(prompts: pd.DataFrame) -> dict[str, dict]:
    return {record["prompt"]: record for record in prompts.to_dict("records")}


def test_planted_bos_head_sends_all_mass_to_the_first_block(tiny_model):
    params = PatternParams(prompt_ids=("p0",), max_blocks=4)
    table, prompts = snapshot(tiny_model, [planting.bos_head(1, 2)], params)
    (n_blocks,) = {len(record["block_starts"]) for record in tokens_of(prompts).values()}
    assert n_blocks == 4
    sink = pooled_of(table, "p0", 1, 2, n_blocks)
    torch.testing.assert_close(sink[:, 0], torch.ones(n_blocks, dtype=torch.float64))
    assert sink[:, 1:].abs().max() < 1e-6
    # negative case: an unplanted head of the random model does not put everything on block 0
    assert pooled_of(table, "p0", 1, 0, n_blocks)[1:, 0].max() < 0.99


def test_planted_previous_token_head_is_stored_exactly_with_one_token_blocks(tiny_model):
    params = PatternParams(prompt_ids=("p1",), max_blocks=64)
    table = snapshot_table(tiny_model, [planting.previous_token_head(0, 3)], params)
    length = len(tiny_model.tokenize(TEXTS[1]))
    stored = pooled_of(table, "p1", 0, 3, length)
    expected = torch.zeros(length, length, dtype=torch.float64)
    expected[0, 0] = 1
    expected[torch.arange(1, length), torch.arange(length - 1)] = 1
    torch.testing.assert_close(stored, expected, atol=1e-6, rtol=0)


def test_planted_uniform_head_has_closed_form_pooled_mass(tiny_model):
    params = PatternParams(prompt_ids=("p0",), max_blocks=5)
    table, prompts = snapshot(tiny_model, [planting.uniform_head(0, 1)], params)
    record = tokens_of(prompts)["p0"]
    length, starts = len(record["ids"]), record["block_starts"]
    ends = [*starts[1:], length]
    expected = torch.zeros(len(starts), len(starts), dtype=torch.float64)
    for qb, (q0, q1) in enumerate(zip(starts, ends, strict=True)):
        for kb, (k0, k1) in enumerate(zip(starts, ends, strict=True)):
            # query q gives 1/(q+1) to each key ≤ q
            visible = [max(0, min(k1, q + 1) - k0) / (q + 1) for q in range(q0, q1)]
            expected[qb, kb] = sum(visible) / (q1 - q0)
    torch.testing.assert_close(
        pooled_of(table, "p0", 0, 1, len(starts)), expected, atol=1e-6, rtol=0
    )


def test_query_chunks_add_up_to_the_whole_pattern(tiny_model):
    """The fast path feeds pattern rows in query chunks; pooling must not depend on them."""
    info = tiny_model.info
    length = 11
    tokens = torch.arange(3, 3 + length)[None]
    batch = Batch(tokens, torch.tensor([length]), ("x",))
    pattern = random_causal_patterns(1, info.n_heads, length, length, seed=3)
    whole = PatternSnapshotProbe(info, PatternParams(max_blocks=4))
    chunked = PatternSnapshotProbe(info, PatternParams(max_blocks=4))
    for probe, chunks in ((whole, [(0, length)]), (chunked, [(0, 4), (4, 9), (9, length)])):
        probe.start_batch(batch)
        for start, stop in chunks:
            probe.on_pattern(0, pattern[:, :, start:stop], start, batch)
        probe.end_batch(batch)
    expected = pd.DataFrame(whole.rows())
    got = pd.DataFrame(chunked.rows())
    pd.testing.assert_frame_equal(got, expected, atol=1e-6, rtol=0)
    pooled = pattern_snapshots.pool_pattern(pattern[0], pattern_snapshots.block_starts(length, 4))
    attention = expected[expected.metric == "attention"]
    assert attention.value.sum() == pytest.approx(float(pooled.tril().sum()), rel=1e-5)


def test_fast_path_stores_the_same_patterns_as_the_bridge(tiny_model):
    params = PatternParams(n_prompts=3, max_blocks=5)
    bridge = snapshot_table(tiny_model, [], params, path="bridge")
    fast = snapshot_table(tiny_model, [], params, path="fast")
    keys = ["metric", "layer", "head", "prompt", "position", "key_position"]
    bridge, fast = (t.sort_values(keys, ignore_index=True) for t in (bridge, fast))
    pd.testing.assert_frame_equal(fast, bridge, atol=1e-5, rtol=0)


def test_default_snapshots_the_first_n_prompts_and_stores_their_tokens(tiny_model):
    table, prompts = snapshot(tiny_model, [], PatternParams(n_prompts=2, max_blocks=8))
    info = tiny_model.info
    records = tokens_of(prompts)
    assert len(records) == 2
    for prompt, record in records.items():
        text = TEXTS[int(prompt[1:])]
        assert list(record["ids"]) == tiny_model.tokenize(text)
        assert list(record["text"]) == [tiny_model.tokenizer.decode([i]) for i in record["ids"]]
        n_blocks = len(record["block_starts"])
        assert n_blocks == min(8, len(record["ids"]))
        rows = table[(table.metric == "attention") & (table["prompt"] == prompt)]
        assert len(rows) == info.n_layers * info.n_heads * n_blocks * (n_blocks + 1) // 2
    attention = table[table.metric == "attention"]
    row_sums = attention.groupby(["prompt", "layer", "head", "position"]).value.sum()
    assert row_sums.to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_a_named_prompt_that_never_comes_is_an_error_naming_it(tiny_model):
    with pytest.raises(ValueError, match="nope"):
        snapshot_table(tiny_model, [], PatternParams(prompt_ids=("p0", "nope")))


def test_dashboard_reads_back_what_the_probe_stored(tiny_model, tmp_path):
    table, prompts = snapshot(
        tiny_model, [planting.bos_head(1, 2)], PatternParams(prompt_ids=("p0",), max_blocks=6)
    )
    side = {"pattern_prompts": prompts}
    store.write_run(tmp_path, "snap", table.assign(model="tiny-random"), {"model": {}}, side)
    prompts = data.load_pattern_prompts(tmp_path, "snap")
    assert set(prompts) == {"p0"}
    ids = tiny_model.tokenize(TEXTS[0])
    assert prompts["p0"].text == tuple(tiny_model.tokenizer.decode([i]) for i in ids)
    cells = data.load_head_pattern(tmp_path, "snap", 1, 2, "p0")
    matrix = torch.zeros(6, 6, dtype=torch.float64)
    for query, key, value in cells.itertuples(index=False):
        matrix[query, key] = value
    torch.testing.assert_close(matrix, pooled_of(table, "p0", 1, 2, 6))
    assert matrix[:, 0].min() > 0.999999
    assert "pattern" not in set(data.load_results(tmp_path, "snap").probe)
