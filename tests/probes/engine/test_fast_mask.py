"""The fast path builds no [batch, 1, T, T] mask: `bridge.chunked_mask` hands the attention
function the mask's rule, evaluated per chunk over a band of keys (causal, padding, sliding
window). Its rows equal the eager Hugging Face forward's `output_attentions` rows, for padded
batches, GQA, and sliding-window layers (Mistral, Gemma 3), and sliding layers get only the
window's keys."""

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from probes import bridge
from probes.core.probe import StreamingProbe
from probes.core.types import Batch, ProbeParams
from probes.engine import fast as fastpath

WINDOW = 4
SHAPE = dict(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    head_dim=8,
    max_position_embeddings=64,
    pad_token_id=0,
)


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SHAPE))
    elif kind == "mistral":
        model = MistralForCausalLM(MistralConfig(**SHAPE, sliding_window=WINDOW))
    else:  # Gemma 3: sliding, sliding, global; softcapless, query_pre_attn_scalar scaling
        layer_types = ["sliding_attention", "sliding_attention", "full_attention"]
        config = Gemma3TextConfig(**SHAPE, sliding_window=WINDOW, layer_types=layer_types)
        model = Gemma3ForCausalLM(config)
    model.config._attn_implementation = "eager"
    return model.eval()


class Recorder(StreamingProbe):
    """Puts every banded chunk back into full [layer, batch, head, T, T] patterns."""

    name = "recorder"
    Params = ProbeParams

    def __init__(self, n_layers, n_batch, n_heads, n):
        self.patterns = torch.full((n_layers, n_batch, n_heads, n, n), float("nan"))
        self.bands = []

    def on_pattern(self, layer, rows, q_start, batch, k_start=0):
        q_stop, k_stop = q_start + rows.shape[2], k_start + rows.shape[-1]
        target = self.patterns[layer, :, :, q_start:q_stop]
        target[...] = 0.0  # keys outside the band get exactly zero
        target[..., k_start:k_stop] = rows
        self.bands.append((layer, q_start, q_stop, k_start, k_stop))

    def rows(self):
        return []


def padded_batch(n_batch=3, n=13, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 50, (n_batch, n), generator=generator)
    lengths = torch.tensor([n, 9, 5][:n_batch])
    attention = torch.arange(n)[None, :] < lengths[:, None]
    tokens[~attention] = 0
    return tokens, attention.long(), lengths


def fast_forward(model, tokens, attention, lengths, chunk_rows):
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    recorder = Recorder(n_layers, *tokens.shape[:1], n_heads, tokens.shape[1])
    batch = Batch(tokens, lengths, tuple(f"p{i}" for i in range(len(lengths))))
    chunk_bytes = chunk_rows * 4 * tokens.shape[0] * n_heads * tokens.shape[1]
    seen_masks = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen_masks.append(attention_mask)
        return fastpath.streaming_attention(module, query, key, value, attention_mask, **kwargs)

    bridge.register_attention(fastpath.ATTENTION_NAME, spy)
    token = fastpath._ACTIVE.set(fastpath._Consumer([recorder], batch, chunk_bytes))
    try:
        with (
            torch.inference_mode(),
            bridge.attention_implementation(config, fastpath.ATTENTION_NAME),
        ):
            hidden = model.model(input_ids=tokens, attention_mask=attention).last_hidden_state
    finally:
        fastpath._ACTIVE.reset(token)
    return hidden, recorder, seen_masks


@pytest.mark.parametrize("chunk_rows", [1, 3, 13])
@pytest.mark.parametrize("kind", ["llama", "mistral", "gemma3"])
def test_fast_rows_and_output_equal_eager_output_attentions(kind, chunk_rows):
    model = tiny(kind)
    tokens, attention, lengths = padded_batch()
    with torch.inference_mode():
        eager = model.model(input_ids=tokens, attention_mask=attention, output_attentions=True)
    hidden, recorder, masks = fast_forward(model, tokens, attention, lengths, chunk_rows)
    # No layer was handed a tensor mask: only the rule.
    assert masks and all(isinstance(mask, bridge.ChunkedMask) for mask in masks)
    real = attention.bool()  # padding queries are not compared (eager spreads them uniformly)
    for layer, expected in enumerate(eager.attentions):
        got = recorder.patterns[layer]
        torch.testing.assert_close(
            got.transpose(1, 2)[real], expected.transpose(1, 2)[real], rtol=1e-5, atol=1e-5
        )
    torch.testing.assert_close(hidden[real], eager.last_hidden_state[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_sliding_layers_get_only_the_window_band(kind):
    model = tiny(kind)
    tokens, attention, lengths = padded_batch(n=13)
    _, recorder, _ = fast_forward(model, tokens, attention, lengths, chunk_rows=3)
    n_layers = model.config.num_hidden_layers
    types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * n_layers
    sliding = {layer for layer, t in enumerate(types) if t == "sliding_attention"}
    assert sliding  # the test model has sliding layers
    for layer, q_start, q_stop, k_start, k_stop in recorder.bands:
        assert k_stop == q_stop  # causal: never a key past the chunk
        if layer in sliding:
            assert k_start == max(0, q_start - WINDOW + 1)
            assert k_stop - k_start <= WINDOW + (q_stop - q_start) - 1
        else:
            assert k_start == 0
    assert any(k_start > 0 for _, _, _, k_start, _ in recorder.bands)  # banding really happened


def test_chunked_mask_block_equals_sdpa_mask_and_its_band_holds_every_visible_key():
    from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

    attention = torch.tensor([[1] * 11, [1] * 7 + [0] * 4])
    for rule in (None, sliding_window_causal_mask_function(3)):
        kwargs = dict(mask_function=rule) if rule is not None else {}
        args = dict(batch_size=2, q_length=11, kv_length=11, attention_mask=attention, **kwargs)
        dense = sdpa_mask(**args, allow_is_causal_skip=False)
        mask = bridge.chunked_mask(**args, local_size=3 if rule else None)
        assert mask.window == (3 if rule else None)
        for start in range(11):
            for stop in range(start + 1, 12):
                k_start, k_stop = mask.key_band(start, stop)
                assert not dense[:, :, start:stop, :k_start].any()
                assert not dense[:, :, start:stop, k_stop:].any()
                block = mask.block(start, stop, k_start, k_stop)
                assert torch.equal(block, dense[:, :, start:stop, k_start:k_stop])


def test_a_mask_ored_with_another_rule_is_not_banded():
    """A bidirectional overlay (image tokens) can let a query see a later key: no band."""
    from transformers.masking_utils import causal_mask_function, or_masks

    def image_block(batch_idx, head_idx, q_idx, kv_idx):
        return (q_idx < 4) & (kv_idx < 4)

    rule = or_masks(causal_mask_function, image_block)
    mask = bridge.chunked_mask(1, 8, 8, mask_function=rule, use_vmap=True)
    assert mask.key_band(0, 2) == (0, 8)
    assert mask.block(0, 2, 0, 8)[0, 0, 0, :4].all()  # query 0 sees keys 1–3


@pytest.mark.parametrize("kind", ["llama", "mistral", "gemma3"])
def test_layers_nobody_reads_run_sdpa_or_on_a_sliding_layer_exact_rows(kind, monkeypatch):
    """`attention_rows.attention_without_rows` (the retrieval prefill, layers without readers):
    the same output as eager attention, with rows computed only on sliding-window layers."""
    from probes import attention_rows

    model = tiny(kind)
    tokens, attention, _ = padded_batch()
    with torch.inference_mode():
        eager = model.model(input_ids=tokens, attention_mask=attention).last_hidden_state
    chunked = []
    original = attention_rows.chunked_attention

    def spy(*args, **kwargs):
        chunked.append(args[3].window)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_rows, "chunked_attention", spy)
    bridge.register_attention("test_without_rows", attention_rows.attention_without_rows)
    with torch.inference_mode(), bridge.attention_implementation(model.config, "test_without_rows"):
        hidden = model.model(input_ids=tokens, attention_mask=attention).last_hidden_state
    real = attention.bool()
    torch.testing.assert_close(hidden[real], eager[real], rtol=1e-5, atol=1e-5)
    expected = {"llama": [], "mistral": [WINDOW] * 3, "gemma3": [WINDOW] * 2}[kind]
    assert chunked == expected
