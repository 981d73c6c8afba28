"""The reduction probes (detectors, attention_stats, future_attention, pattern_class, pattern) as
StreamingProbes: the fast path, which hands them pattern rows in query chunks, gives the bridge
path's results, for padded batches and for any chunking of the query rows."""

import pandas as pd
import pytest
import torch

from probes import engine
from probes.core.probe import StreamingProbe
from probes.core.types import Batch, ProbeParams, TokenizedPrompt
from probes.engine import fast as fastpath
from probes.families.attention_stats import AttentionStatsProbe
from probes.families.detectors import DetectorParams, DetectorProbe
from probes.families.future_attention import (
    FutureAttentionParams,
    FutureAttentionProbe,
    influence_window,
    window_sizes,
)
from probes.families.pattern import PatternParams, PatternSnapshotProbe
from probes.families.pattern_class import PatternClassParams, PatternClassProbe
from probes.inputs.synthetic import repeated_random_tokens
from probes.models.tiny import word_vocabulary
from tests import planting
from tests.tensors import random_causal_patterns

WORDS = [w for w in word_vocabulary() if w.isalpha() and len(w) > 2]

# Small windows, so that tiny-model prompts of 4–31 tokens exercise every branch: pattern_class
# profiles the prompts of ≥ 12 tokens from their last 6 queries, which straddle chunk borders.
PROBES = {
    "detectors": lambda info: DetectorProbe(info),
    "detectors-excluding": lambda info: DetectorProbe(
        info, DetectorParams(exclude_bos=True, exclude_current_token=True)
    ),
    "attention_stats": lambda info: AttentionStatsProbe(info),
    "future_attention": lambda info: FutureAttentionProbe(info),
    "future_attention-short": lambda info: FutureAttentionProbe(
        info, FutureAttentionParams(window=3, horizon_low=2, horizon_high=7, first_position=2)
    ),
    "pattern_class": lambda info: PatternClassProbe(
        info, PatternClassParams(last_queries=6, n_init=2, block_size=4, min_length=12)
    ),
    "pattern": lambda info: PatternSnapshotProbe(info, PatternParams(n_prompts=5, max_blocks=4)),
}


def random_layer_patterns(n_layers, n_batch, n_heads, n, seed):
    return random_causal_patterns(n_layers, n_batch, n_heads, n, n, seed=seed)


def words(n: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=generator)]


def padded_batches(model) -> list[Batch]:
    """Two right-padded batches of unequal lengths: repeated random tokens (induction has
    something to find) and word prose."""
    vocabulary = [model.tokenizer.convert_tokens_to_ids(w) for w in WORDS]
    bos = model.info.bos_token_id
    (long_repeat,) = repeated_random_tokens(vocabulary, 1, 12, seed=0, bos=bos)
    (short_repeat,) = repeated_random_tokens(vocabulary, 1, 5, seed=1, bos=bos)
    first = [
        ("repeat-25", long_repeat),
        ("prose-21", model.tokenize(" ".join(words(20, 2)))),
        ("repeat-11", short_repeat),
    ]
    second = [
        ("prose-31", model.tokenize(" ".join(words(30, 3)))),
        ("prose-4", model.tokenize("the cat sat")),
    ]
    return [
        next(
            engine.batches(
                [TokenizedPrompt(i, tuple(t)) for i, t in group],
                len(group),
                0,
                torch.device("cpu"),
                keep_order=True,
            )
        )
        for group in (first, second)
    ]


class ChunkSpy(StreamingProbe):
    """Records the size of every chunk of rows the fast path hands out."""

    name = "chunk-spy"
    Params = ProbeParams

    def __init__(self, info):
        super().__init__(info)
        self.sizes = []

    def on_pattern(self, layer, rows, q_start, batch):
        self.sizes.append(rows.shape[2])

    def rows(self):
        return []


def bridge_table(model, make_probe, batches) -> pd.DataFrame:
    probe = make_probe(model.info)
    probe.bind(model)
    for batch in batches:
        engine.run_batch(model, batch, [probe], path="bridge")
    return pd.DataFrame(probe.rows())


def fast_table(model, make_probe, batches, chunk_rows: int) -> pd.DataFrame:
    probe, spy = make_probe(model.info), ChunkSpy(model.info)
    probe.bind(model)
    for batch in batches:
        n_batch, width = batch.tokens.shape
        chunk_bytes = chunk_rows * 4 * n_batch * model.info.n_heads * width  # fp32 rows
        fastpath.run_batch(model, batch, [probe, spy], chunk_bytes=chunk_bytes)
    assert max(spy.sizes) == chunk_rows  # the rows really came in chunks of this size
    return pd.DataFrame(probe.rows())


@pytest.mark.parametrize("chunk_rows", [2, 5])
@pytest.mark.parametrize("name", list(PROBES))
def test_fast_path_in_chunks_equals_bridge_on_padded_batches(tiny_model, name, chunk_rows):
    batches = padded_batches(tiny_model)
    assert len({int(n) for batch in batches for n in batch.lengths}) == 5  # unequal lengths
    bridge = bridge_table(tiny_model, PROBES[name], batches)
    fast = fast_table(tiny_model, PROBES[name], batches, chunk_rows)
    assert len(bridge) > 0 and bridge.value.notna().all()
    pd.testing.assert_frame_equal(fast, bridge, rtol=0, atol=1e-5)


def test_pattern_class_profiles_only_long_enough_prompts(tiny_model):
    """The equivalence above covers profiled and skipped prompts alike."""
    probe = PROBES["pattern_class"](tiny_model.info)
    for batch in padded_batches(tiny_model):
        fastpath.run_batch(tiny_model, batch, [probe], chunk_bytes=1)
    assert probe.n_profiled == 3  # 25, 21 and 31 tokens; not 11 or 4


def test_hooks_attached_to_the_bridge_keep_auto_on_the_bridge_and_refuse_fast(tiny_model):
    """The fast path runs the unwrapped model, so planted patterns and interventions set around a
    scan would be skipped silently; the engine must see them and stay on the bridge."""
    probe = AttentionStatsProbe(tiny_model.info)
    assert engine.choose_path(tiny_model, [probe], "auto") == "fast"
    with planting.planted(tiny_model, [planting.uniform_head(0, 1)]):
        assert engine.choose_path(tiny_model, [probe], "auto") == "bridge"
        with pytest.raises(ValueError, match=r"bypasses the bridge.*hook_attn_scores.*tiny-random"):
            engine.choose_path(tiny_model, [probe], "fast")
    assert engine.choose_path(tiny_model, [probe], "auto") == "fast"


# --- any chunking, in any order -------------------------------------------------------------------


def feed(probe, batch, patterns, chunks):
    """start_batch, then on_pattern for `chunks` [(layer, q_start, q_stop)], then end_batch."""
    probe.start_batch(batch)
    for layer, start, stop in chunks:
        probe.on_pattern(layer, patterns[layer, :, :, start:stop], start, batch)
    probe.end_batch(batch)


@pytest.mark.parametrize("name", list(PROBES))
def test_rows_arriving_out_of_order_and_interleaved_across_layers_give_the_same_rows(
    tiny_model, name
):
    info = tiny_model.info
    n = 17
    tokens = torch.randint(3, 9, (2, n), generator=torch.Generator().manual_seed(0))  # repeats
    batch = Batch(tokens, torch.tensor([n, 13]), ("a", "b"))
    patterns = random_layer_patterns(info.n_layers, 2, info.n_heads, n, seed=1)
    whole, chunked = PROBES[name](info), PROBES[name](info)
    feed(whole, batch, patterns, [(layer, 0, n) for layer in range(info.n_layers)])
    borders = [(0, 5), (5, 6), (6, 12), (12, 16), (16, n)]
    shuffled = [(layer, a, b) for a, b in reversed(borders) for layer in range(info.n_layers)]
    feed(chunked, batch, patterns, shuffled)
    expected = pd.DataFrame(whole.rows())
    assert len(expected) > 0
    pd.testing.assert_frame_equal(pd.DataFrame(chunked.rows()), expected, rtol=0, atol=1e-6)


def test_pattern_class_refuses_a_batch_whose_last_rows_never_arrived(tiny_model):
    info = tiny_model.info
    n = 17
    batch = Batch(torch.arange(n)[None], torch.tensor([n]), ("a",))
    patterns = random_layer_patterns(info.n_layers, 1, info.n_heads, n, seed=2)
    probe = PROBES["pattern_class"](info)
    with pytest.raises(RuntimeError, match=r"pattern_class.*'a'.*layer 1"):
        feed(probe, batch, patterns, [(0, 0, n), (1, 0, 14)])  # layer 1 misses queries 14..16


def test_window_sizes_count_the_influence_window_without_building_it():
    generator = torch.Generator().manual_seed(3)
    scored = torch.rand(3, 23, generator=generator) > 0.3
    for low, high in [(0, 0), (2, 7), (10, 50), (5, 5), (0, 40)]:
        expected = influence_window(scored, low, high).sum(1)
        assert torch.equal(window_sizes(scored, low, high), expected), (low, high)


# --- the real model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_all_four_probes_together_fast_equals_bridge_on_smollm2(smollm2, monkeypatch):
    """One scan (with its own pass for the detectors' random tokens), the fast path handing out
    chunks of a few rows."""
    from probes.inputs.prompts import stdlib_docs_suite

    def probes():
        info = smollm2.info
        return [
            DetectorProbe(info, DetectorParams(n_sequences=2, half_len=16)),
            AttentionStatsProbe(info),
            FutureAttentionProbe(info),
            PatternClassProbe(info, PatternClassParams(min_length=64)),
        ]

    suite = stdlib_docs_suite(2, 90)  # 103 and 112 tokens: a padded batch

    def scan(path):
        return engine.run(
            smollm2, probes(), suite, batch_size=2, max_tokens=None, progress=False, path=path
        )

    bridge = scan("bridge")
    sizes = []

    def small_chunks(model, batch, probes, run_batch=fastpath.run_batch):
        spy = ChunkSpy(model.info)
        run_batch(model, batch, [*probes, spy], chunk_bytes=2**16)  # 8 rows of 112 keys
        sizes.extend(spy.sizes)

    monkeypatch.setattr(fastpath, "run_batch", small_chunks)
    fast = scan("fast")
    assert 1 < max(sizes) < 33  # every pass, even the 33-token one, came in several chunks
    assert set(bridge.probe) == {
        "detectors",
        "attention_stats",
        "future_attention",
        "pattern_class",
    }
    assert (bridge.metric == "pattern_class").sum() == 270  # the prompts were profiled
    pd.testing.assert_frame_equal(fast, bridge, rtol=1e-5, atol=1e-5)


class EntropySpy(AttentionStatsProbe):
    """Records whether each chunk's entropy came from the engine."""

    def __init__(self, info):
        super().__init__(info)
        self.given = []

    def on_pattern(self, layer, rows, q_start, batch, k_start=0, entropy=None):
        self.given.append(entropy is not None)
        super().on_pattern(layer, rows, q_start, batch, k_start, entropy)


def test_the_fast_path_hands_row_entropy_to_a_probe_that_reads_it(tiny_model):
    fast, bridge, other = (
        EntropySpy(tiny_model.info),
        EntropySpy(tiny_model.info),
        ChunkSpy(tiny_model.info),
    )
    for batch in padded_batches(tiny_model):
        fastpath.run_batch(tiny_model, batch, [fast, other])  # other takes no entropy
        engine.run_batch(tiny_model, batch, [bridge], path="bridge")
    assert len(fast.given) == len(other.sizes) > tiny_model.info.n_layers and all(fast.given)
    assert bridge.given and not any(bridge.given)  # the bridge: the probe takes it from the rows
