import pandas as pd
import pytest
import torch

from probes import bridge, engine
from probes.core import hook_names as hooks
from probes.core.probe import StreamingProbe
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
