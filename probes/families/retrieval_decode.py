"""The retrieval probe's fused decode: a cheap prefill, then greedy steps keeping one row per head.

The bridge path (`probes.decoding.decode_niah`) runs every step through TransformerLens with
eager attention, and its prefill too, so at 8k tokens the prefill alone builds each layer's T×T
pattern. Here the Hugging Face model under the bridge runs with its wrappers swapped out and a
registered attention function:
  - the prefill (`attention_rows.attention_without_rows`) goes to the fused SDPA kernel, which
    keeps no attention weights; on a sliding-window layer, whose T×T mask would send SDPA to
    its unfused kernel over every key, to exact rows over the window, a query chunk at a time;
  - a one-query call (a decoding step, `last_row_attention`) rebuilds that query's softmax row
    from q and the KV cache exactly as eager attention does (GQA-aware, the layer's mask and
    softcap, fp32 softmax),
    hands each head's arg-max key to the recorder, and multiplies the same row into the values
    for the layer's output.
The prompt minus its last token is prefilled and the last token fed first, as the authors (and
`probes.decoding.prefill`) do, so step s attends over the prompt and the s tokens before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import torch
from jaxtyping import Float

from probes import bridge
from probes.attention_rows import attention_without_rows, pattern_rows, rows_times_values
from probes.models import LoadedModel

ATTENTION_NAME = "headlab_last_row"
PREFILL_NAME = "headlab_prefill"  # SDPA, or exact rows over a sliding layer's window
# Called once per decoding step and layer with each head's arg-max key index and the row length.
TopKeySink = Callable[[int, torch.Tensor, int], None]
OnStep = Callable[[int, int], None]

_SINK: ContextVar[TopKeySink | None] = ContextVar("headlab_last_row_sink", default=None)


def supports(model: LoadedModel) -> bool:
    """Whether the fused decode can run this model (it needs the HF decoder-layer list)."""
    try:
        layers = bridge.decoder_layers(bridge.hf_model(model))
    except NotImplementedError:
        return False
    return len(layers) == model.info.n_layers and model.vision is None


def last_row(
    query: Float[torch.Tensor, "batch head 1 d_head"],
    key: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    attention_mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> Float[torch.Tensor, "batch head 1 k_pos"]:
    """The one query's softmax row over every cached key, as eager attention computes it
    (`pattern_rows` for the last query: a one-query step's mask has one row, and None means it
    sees every key); query head h reads KV head h // n_rep, the keys never copied n_rep times."""
    n_queries = query.shape[-2]
    return pattern_rows(query, key, attention_mask, scaling, n_queries - 1, n_queries, softcap)


def last_row_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: SDPA for a prefill (or with no sink listening), the
    exact last row for a one-query step, its arg-max keys sent to the sink."""
    sink = _SINK.get()
    if sink is None or query.shape[-2] != 1:
        return bridge.sdpa_attention(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise RuntimeError(f"the fused decode reads one row per step, got {query.shape[0]} rows")
    layer = module.layer_idx
    if not isinstance(layer, int):
        raise TypeError(f"attention module {type(module).__name__} has no integer layer_idx")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    rows = last_row(query, key, attention_mask, scale, kwargs.get("softcap"))
    sink(layer, rows[0, :, 0].argmax(-1), rows.shape[-1])
    return rows_times_values(rows, value).transpose(1, 2).contiguous(), None


def fused_greedy_decode(
    model: LoadedModel,
    tokens: Sequence[int],
    *,
    max_new_tokens: int,
    stop: Callable[[int], bool],
    sink: TopKeySink,
    on_step: OnStep | None = None,
) -> list[int]:
    """Greedy tokens after `tokens` (ending at the first stop token, which is kept), decoded with
    an SDPA prefill (exact rows over the window on a sliding-window layer, where SDPA would
    take the T×T mask: `attention_rows.attention_without_rows`) and `sink` fed each step's
    arg-max keys per layer. `on_step(step, token)` runs after each step's forward, when the
    sink has seen every layer of it."""
    if len(tokens) < 2:
        raise ValueError(f"a prompt to decode from needs at least 2 tokens, got {len(tokens)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    bridge.register_attention(PREFILL_NAME, attention_without_rows)
    bridge.register_attention(ATTENTION_NAME, last_row_attention, chunked=False)
    device = model.device
    extra = bridge.last_logits_only(model)
    generated: list[int] = []
    with bridge.unbridged_model(model, PREFILL_NAME) as hf_model:
        prompt = torch.tensor([list(tokens[:-1])], device=device)
        cache = hf_model(input_ids=prompt, use_cache=True, **extra).past_key_values
        token = torch.tensor([[tokens[-1]]], device=device)
        listening = _SINK.set(sink)
        try:
            with bridge.attention_implementation(hf_model.config, ATTENTION_NAME):
                for step in range(max_new_tokens):
                    output = hf_model(input_ids=token, past_key_values=cache, use_cache=True)
                    cache = output.past_key_values
                    token = output.logits[:, -1].argmax(-1, keepdim=True)
                    value = int(token)
                    generated.append(value)
                    if on_step is not None:
                        on_step(step, value)
                    if stop(value):
                        break
        finally:
            _SINK.reset(listening)
    return generated
