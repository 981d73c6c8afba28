import pandas as pd
import pytest
import torch

from probes import bridge, engine
from probes.core import hook_names as hooks
from probes.core.probe import StreamingProbe
from probes.core.reductions import attention_entropy
from probes.core.types import Batch
from probes.engine import fast as fastpath
from probes.families import sink as sinks
from probes.inputs.prompts import Prompt, PromptSuite, stdlib_docs_suite

TEXTS = [
    "the cat went to the park and the dog went to the store",
    "mary gave the ball to john",
    "the capital of france is paris and the river is long and green and blue",
    "one",
]


def suite_of(texts):
    return PromptSuite("t", tuple(Prompt(f"p{i}", t) for i, t in enumerate(texts)), "test")


def eager_rows(query, key, mask, scaling):
    """Reference: repeat KV heads, full score matrix, additive mask, fp32 softmax."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = query @ key.transpose(-1, -2) * scaling
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_pattern_rows_equal_eager_softmax_for_every_chunking(mask_kind, reused, dtype):
    """Also into one reused workspace (float32: softmax in place over the scores; bfloat16:
    scores and rows in two buffers), whose earlier rows each chunk overwrites."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 6, 11, 8, generator=generator)
    key = torch.randn(2, 3, 11, 8, generator=generator)  # GQA: 6 query heads on 3 KV heads
    causal = torch.ones(11, 11, dtype=torch.bool).tril()[None, None].expand(2, 1, 11, 11).clone()
    causal[1, :, :, 7:] = False  # padding keys of the second sequence
    causal[1, :, 7:, 0] = True  # (keep its padding rows non-empty, as sdpa masks do)
    reference = eager_rows(query, key, causal, 0.3)
    mask = {
        "none": None,
        "bool": causal,
        "float": torch.zeros(causal.shape).masked_fill(~causal, float("-inf")),
    }[mask_kind]
    if mask is None:  # a skipped mask means plainly causal, no padding
        reference = eager_rows(query, key, torch.ones(11, 11, dtype=torch.bool).tril(), 0.3)
    query, key = query.to(dtype), key.to(dtype)
    if dtype == torch.bfloat16:  # the reference from the same rounded inputs
        reference = eager_rows(query.float(), key.float(), causal if mask is not None else
                               torch.ones(11, 11, dtype=torch.bool).tril(), 0.3)  # fmt: skip
    workspace = fastpath.Workspace() if reused else None
    tolerance = {} if dtype == torch.float32 else {"rtol": 0.02, "atol": 0.01}
    for step in (1, 4, 11):
        earlier = None
        for start in reversed(range(0, 11, step)):  # widest first: the buffers never grow
            stop = min(start + step, 11)
            rows = fastpath.pattern_rows(query, key, mask, 0.3, start, stop, workspace=workspace)
            # Only the keys these queries can see come back; the reference is exactly 0 past them.
            assert rows.shape[-1] == stop and rows.dtype == torch.float32
            torch.testing.assert_close(rows, reference[:, :, start:stop, :stop], **tolerance)
            assert not reference[:, :, start:stop, stop:].any()
            if earlier is not None:  # a reused buffer: the last chunk's rows are gone
                assert (earlier.data_ptr() == rows.data_ptr()) == reused
            earlier = rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "softcap"])
def test_rows_with_entropy_are_the_same_rows_and_their_log_entropy(mask_kind, reused, dtype):
    """Scores up to ±60 (a sharp head): the entropy from the scores must not lose digits."""
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(2, 6, 13, 8, generator=generator) * 6
    key = torch.randn(2, 3, 13, 8, generator=generator).to(dtype)
    query = query.to(dtype)
    causal = torch.ones(13, 13, dtype=torch.bool).tril()[None, None].expand(2, 1, 13, 13).clone()
    causal[1, :, :, 9:] = False
    causal[1, :, 9:, 0] = True
    mask = {
        "none": None,
        "softcap": None,
        "bool": causal,
        "float": torch.zeros(causal.shape).masked_fill(~causal, float("-inf")),
    }[mask_kind]
    softcap = 5.0 if mask_kind == "softcap" else None
    plain, shared = fastpath.Workspace(), fastpath.Workspace() if reused else None
    for step in (1, 5, 13):
        for start in reversed(range(0, 13, step)):
            stop = min(start + step, 13)
            args = (query, key, mask, 0.3, start, stop, softcap)
            expected = fastpath.pattern_rows(*args).clone()
            rows, entropy = fastpath.pattern_rows_and_entropy(*args, workspace=shared)
            assert torch.equal(rows, expected)
            if reused:  # the rows buffer of a pattern_rows workspace is another use of it
                assert torch.equal(fastpath.pattern_rows(*args, workspace=plain), expected)
            torch.testing.assert_close(entropy, attention_entropy(expected), rtol=0, atol=2e-6)


def test_entropy_of_planted_rows_uniform_one_hot_and_empty():
    """Equal scores: log(visible keys); one key far ahead of the rest: 0. (Rows over no key,
    padding under the fast path's mask, are checked in test_streaming_probes' padded batches.)"""
    n = 6
    query = torch.zeros(1, 2, n, 4)
    key = torch.zeros(1, 2, n, 4)
    query[0, 1] = 1.0
    key[0, 1, 2] = 1000.0  # head 1: every query that sees key 2 puts all its weight there
    _, entropy = fastpath.pattern_rows_and_entropy(query, key, None, 1.0, 0, n)
    torch.testing.assert_close(entropy[0, 0], torch.arange(1, n + 1).float().log())
    assert torch.equal(entropy[0, 1, 2:], torch.zeros(n - 2))
    torch.testing.assert_close(entropy[0, 1, 1], torch.tensor(2.0).log())  # keys 0, 1 alike


def test_rows_times_values_matches_repeated_kv_matmul():
    generator = torch.Generator().manual_seed(1)
    rows = torch.rand(2, 6, 5, 9, generator=generator)
    value = torch.randn(2, 3, 12, 4, generator=generator)  # 3 values no row reaches
    expected = rows @ value[:, :, :9].repeat_interleave(2, dim=1)
    torch.testing.assert_close(fastpath.rows_times_values(rows, value), expected)


def scan_both_paths(model, suite, batch_size=2, max_tokens=None):
    def scan(path):
        probe = sinks.SinkProbe(model.info, sinks.SinkParams(n_positions=6))
        return engine.run(
            model,
            [probe],
            suite,
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=False,
            path=path,
        )

    return scan("fast"), scan("bridge")


def test_fast_path_equals_bridge_path_on_padded_batches(tiny_model):
    fast, bridge = scan_both_paths(tiny_model, suite_of(TEXTS))
    pd.testing.assert_frame_equal(fast, bridge, rtol=0, atol=1e-5)


class RowCounter(StreamingProbe):
    """Records which query rows of which layer each on_pattern call received."""

    name = "row-counter"
    Params = sinks.SinkParams

    def __init__(self, info):
        super().__init__(info)
        self.calls = []

    def on_pattern(self, layer, rows, q_start, batch):
        self.calls.append((layer, q_start, rows.shape[2], rows.sum(-1)))

    def rows(self):
        return []


def test_fast_path_chunks_cover_every_query_row_once(tiny_model):
    counter = RowCounter(tiny_model.info)
    prompts = engine.tokenize_suite(tiny_model, suite_of(TEXTS[:1]), None)
    (batch,) = engine.batches(prompts, 1, 0, torch.device("cpu"))
    n_rows = batch.tokens.shape[1]
    heads = tiny_model.info.n_heads
    # A chunk budget of 3 rows' worth of fp32: 3 × heads × keys × 4 bytes.
    fastpath.run_batch(tiny_model, batch, [counter], chunk_bytes=3 * heads * n_rows * 4)
    for layer in range(tiny_model.info.n_layers):
        spans = [(start, size) for (lay, start, size, _) in counter.calls if lay == layer]
        assert all(size <= 3 for _, size in spans)
        covered = [start + i for start, size in spans for i in range(size)]
        assert covered == list(range(n_rows))
    for *_, row_sums in counter.calls:
        torch.testing.assert_close(row_sums, torch.ones_like(row_sums))


def test_fast_path_output_equals_bridge_logits_and_leaves_bridge_intact(tiny_model):
    tokens = torch.tensor([tiny_model.tokenize(TEXTS[0])])
    batch = Batch(tokens, torch.tensor([tokens.shape[1]]), ("p0",))
    hf_model = tiny_model.bridge.original_model
    with torch.inference_mode():
        bridge_logits = tiny_model.bridge(tokens)
        token = fastpath._ACTIVE.set(fastpath._Consumer([RowCounter(tiny_model.info)], batch, 256))
        try:
            bridge.register_attention(fastpath.ATTENTION_NAME, fastpath.streaming_attention)
            with bridge.unbridged_model(tiny_model, fastpath.ATTENTION_NAME) as unwrapped:
                fast_logits = unwrapped(input_ids=tokens).logits
        finally:
            fastpath._ACTIVE.reset(token)
        torch.testing.assert_close(fast_logits, bridge_logits, rtol=1e-5, atol=1e-5)
        # The bridge is whole again: its hooks fire and its attention is eager.
        seen = []
        hook = (hooks.attn(0, "pattern"), lambda pattern, hook: seen.append(pattern.shape))
        with tiny_model.bridge.hooks(fwd_hooks=[hook]):
            torch.testing.assert_close(tiny_model.bridge(tokens), bridge_logits)
    assert seen == [(1, tiny_model.info.n_heads, tokens.shape[1], tokens.shape[1])]
    assert hf_model.config._attn_implementation == "eager"


def test_auto_path_picks_fast_only_for_streaming_probes(tiny_model):
    probe = sinks.SinkProbe(tiny_model.info)
    assert engine.choose_path(tiny_model, [probe], "auto") == "fast"
    assert engine.choose_path(tiny_model, [probe], "bridge") == "bridge"
    with pytest.raises(ValueError, match="path must be one of"):
        engine.choose_path(tiny_model, [probe], "warp")


@pytest.mark.slow
def test_fast_path_equals_bridge_path_on_the_real_model(smollm2):
    fast, bridge = scan_both_paths(smollm2, stdlib_docs_suite(3, 200), max_tokens=160)
    pd.testing.assert_frame_equal(fast, bridge, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fast_path_equals_bridge_path_on_gemma_past_its_sliding_window():
    from probes.models import load

    gemma = load("gemma-3-270m")  # sliding window 512 in 5 of every 6 layers
    fast, bridge = scan_both_paths(gemma, stdlib_docs_suite(1, 700), batch_size=1, max_tokens=600)
    pd.testing.assert_frame_equal(fast, bridge, rtol=1e-5, atol=1e-5)
