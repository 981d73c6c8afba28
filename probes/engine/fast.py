"""The fast path for streaming probes: pattern rows from queries and keys, in query chunks.

The bridge computes every layer's attention eagerly (a full T×T softmax per layer, hooks on
everything). For probes that only reduce pattern rows and the residual stream
(`StreamingProbe`), we instead run the underlying Hugging Face model with the bridge's wrappers
swapped out and a registered attention function that, a chunk of query rows at a time,
  1. rebuilds the exact softmax rows from the layer's post-rotary queries and keys (GQA-aware,
     the model's own mask, fp32 softmax) over the band of keys the chunk can see (causal; and
     the window of a sliding-window layer, so that such a layer costs O(T·window)),
  2. hands them to the probes, and
  3. multiplies the same rows into the values for the layer's output.
The model never builds its [batch, 1, T, T] mask: the registered mask builder
(`bridge.chunked_mask`) hands the attention function the mask's rule, evaluated per chunk.
Layers without pattern readers, and training, use SDPA. Peak memory holds one chunk of one
layer's rows: batch × heads × at most CHUNK_QUERIES × T floats, capped at CHUNK_BYTES, in
buffers that every chunk and layer of the pass reuses (`Workspace`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from probes import bridge
from probes.core.probe import StreamingProbe
from probes.core.types import Batch
from probes.models import LoadedModel

ATTENTION_NAME = "headlab_streaming"
# Query rows per chunk: enough for the two matmuls to run efficiently, few enough for a chunk's
# rows to stay near the cache. One SmolLM2 layer at 8k keys on 2 cores took 1.3x as long with
# 14 rows (the old fixed 4 MB) and 1.15x with 113 rows as with 56; at 1k-4k keys, 28-113 rows
# were within this machine's noise.
CHUNK_QUERIES = 64
CHUNK_BYTES = 64 * 2**20  # and never more than this much of fp32 rows (big batches, long T)


class Workspace:
    """Scores and rows buffers that every chunk of a pass writes into. A fresh c × T tensor per
    chunk is paid in page faults: on SmolLM2 at 4k tokens the query-key product of a layer
    took 1.35x as long into new tensors as into a reused one (0.083 s vs 0.061 s)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def take(
        self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A contiguous [shape] view of buffer `name`, grown when too small; its contents are
        whatever the last user left."""
        size = math.prod(shape)
        buffer = self._buffers.get((name, dtype, device))
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(size, dtype=dtype, device=device)
            self._buffers[name, dtype, device] = buffer
        return buffer[:size].view(*shape)


@dataclass
class _Consumer:
    probes: Sequence[StreamingProbe]
    batch: Batch
    chunk_bytes: int
    workspace: Workspace = field(default_factory=Workspace)


_ACTIVE: ContextVar[_Consumer | None] = ContextVar("headlab_fastpath_consumer", default=None)


Mask = torch.Tensor | bridge.ChunkedMask | None


def key_band(mask: Mask, n_queries: int, n_keys: int, q_start: int, q_stop: int) -> tuple[int, int]:
    """Keys [k_start, k_stop) that queries q_start…q_stop−1 can see: all others get exactly zero
    attention. Causal: none past the chunk's last query (half the work over a sequence); a
    sliding-window layer also none before the window of its first query, so such a layer costs
    O(T·window), not O(T²)."""
    if isinstance(mask, bridge.ChunkedMask):
        return mask.key_band(q_start, q_stop)
    return 0, visible_keys(n_queries, n_keys, q_stop)


def pattern_rows(
    query: Float[torch.Tensor, "batch head q_pos d_head"],
    key: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Mask,
    scaling: float,
    q_start: int,
    q_stop: int,
    softcap: float | None = None,
    band: tuple[int, int] | None = None,
    workspace: Workspace | None = None,
) -> Float[torch.Tensor, "batch head q_chunk band"]:
    """Softmax attention rows q_start:q_stop, as eager attention computes them, over the keys
    of `band` (default `key_band(...)`): keys outside it get exactly zero attention, so the rows
    are not padded out to all keys. `attention_mask` is a `ChunkedMask` (the fast path's), a
    [batch, 1, q, k] bool or additive mask, or None for plainly causal. A query that sees no key
    at all (a padding query past a sliding window) gets a row of zeros.

    Grouped-query attention is handled by grouping query heads per KV head (query head h reads
    KV head h // n_rep), so keys are never copied n_rep times. With a `workspace` the scores
    and rows are written into its buffers (the rows then last until its next use).
    """
    n_batch, n_heads, n_queries, d_head = query.shape
    n_kv, n_keys = key.shape[1], key.shape[-2]
    n_rep, n_rows = n_heads // n_kv, q_stop - q_start
    k_start, k_stop = (
        band if band is not None else key_band(attention_mask, n_queries, n_keys, q_start, q_stop)
    )
    # Scaling the chunk's queries (not the scores) saves a pass over the c × T scores.
    grouped = (query[:, :, q_start:q_stop] * scaling).reshape(n_batch, n_kv, n_rep * n_rows, d_head)
    shape = (n_batch, n_heads, n_rows, k_stop - k_start)
    into = None if workspace is None else workspace.take("scores", shape, query.dtype, query.device)
    keys = key[:, :, k_start:k_stop].transpose(-1, -2)
    scores = torch.matmul(
        grouped, keys, out=None if into is None else into.view(*grouped.shape[:-1], -1)
    )
    scores = scores.view(shape)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    may_be_empty = False
    if isinstance(attention_mask, bridge.ChunkedMask):
        for first, last in attention_mask.masked_spans(q_start, q_stop, k_start, k_stop):
            block = attention_mask.block(q_start, q_stop, first, last)
            scores[..., first - k_start : last - k_start].masked_fill_(~block, float("-inf"))
        may_be_empty = attention_mask.padding is not None
    elif attention_mask is None:  # the mask was skipped because it is plainly causal
        # Only the last n_rows band columns can lie past a query: mask that block alone.
        offset = n_keys - n_queries
        first = max(k_stop - n_rows, k_start)
        queries = torch.arange(q_start, q_stop, device=query.device)[:, None] + offset
        hidden = torch.arange(first, k_stop, device=query.device)[None, :] > queries
        scores[..., first - k_start :].masked_fill_(hidden, float("-inf"))
    else:
        mask = attention_mask[:, :, q_start:q_stop, k_start:k_stop]
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores += mask
    if workspace is None:
        rows = torch.softmax(scores, dim=-1, dtype=torch.float32)
    else:  # in place when the scores are float32: the softmax reads each row before writing it
        out = scores if scores.dtype == torch.float32 else None
        out = workspace.take("rows", shape, torch.float32, query.device) if out is None else out
        rows = torch.softmax(scores, dim=-1, dtype=torch.float32, out=out)
    if may_be_empty:  # softmax over no key is NaN; those rows are padding: zero, not NaN
        rows.nan_to_num_(0.0)
    return rows


def rows_times_values(
    rows: Float[torch.Tensor, "batch head q_chunk band"],
    value: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    k_start: int = 0,
) -> Float[torch.Tensor, "batch head q_chunk d_head"]:
    """Attention output of the rows over the values k_start…k_start + rows.shape[-1] − 1,
    grouped per KV head like `pattern_rows`."""
    n_batch, n_heads, n_rows, n_keys = rows.shape
    n_kv = value.shape[1]
    grouped = rows.to(value.dtype).reshape(n_batch, n_kv, (n_heads // n_kv) * n_rows, n_keys)
    output = torch.matmul(grouped, value[:, :, k_start : k_start + n_keys])
    return output.view(n_batch, n_heads, n_rows, value.shape[-1])


def visible_keys(n_queries: int, n_keys: int, q_stop: int) -> int:
    """Keys that queries up to `q_stop` can see under a causal mask (the rest are zeros)."""
    return min(n_keys, q_stop + n_keys - n_queries)


def _chunk_rows(consumer: _Consumer, n_batch: int, n_heads: int, n_keys: int) -> int:
    """Query rows per chunk: CHUNK_QUERIES, fewer where their rows over `n_keys` (the widest
    band a chunk can need) would pass the byte budget."""
    affordable = consumer.chunk_bytes // (4 * n_batch * n_heads * n_keys)
    return max(1, min(CHUNK_QUERIES, affordable))


def streaming_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function. When probes read patterns, compute attention in query
    chunks ourselves (exact eager softmax), hand each chunk of rows to the probes and use the same
    rows for the output; otherwise run the fast SDPA kernel."""
    consumer = _ACTIVE.get()
    readers = [p for p in consumer.probes if "pattern" in p.reads] if consumer else []
    if consumer is None or not readers or module.training:
        if isinstance(attention_mask, bridge.ChunkedMask):
            attention_mask = attention_mask.for_sdpa()
        return bridge.sdpa_attention(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = module.layer_idx
    if not isinstance(layer, int):
        raise TypeError(f"attention module {type(module).__name__} has no integer layer_idx")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    n_batch, n_heads, n_queries, _ = query.shape
    n_keys = key.shape[-2]
    output = query.new_empty(n_batch, n_heads, n_queries, value.shape[-1])
    window = attention_mask.window if isinstance(attention_mask, bridge.ChunkedMask) else None
    widest = n_keys if window is None else min(n_keys, window + CHUNK_QUERIES)
    step = _chunk_rows(consumer, n_batch, n_heads, widest)
    for q_start in range(0, n_queries, step):
        q_stop = min(q_start + step, n_queries)
        band = key_band(attention_mask, n_queries, n_keys, q_start, q_stop)
        rows = pattern_rows(
            query, key, attention_mask, scale, q_start, q_stop, kwargs.get("softcap"), band,
            consumer.workspace,
        )  # fmt: skip
        for probe in readers:
            feed(probe, layer, rows, q_start, band[0], consumer.batch)
        output[:, :, q_start:q_stop] = rows_times_values(rows, value, band[0])
    return output.transpose(1, 2).contiguous(), None


def feed(
    probe: StreamingProbe,
    layer: int,
    rows: torch.Tensor,
    q_start: int,
    k_start: int,
    batch: Batch,
) -> None:
    """Hand a probe rows over keys k_start…: as a band when its `on_pattern` takes `k_start`,
    else padded with the zeros before the band (exact, but O(T) per row again)."""
    if k_start == 0:
        probe.on_pattern(layer, rows, q_start, batch)
    elif takes_band(probe):
        probe.on_pattern(layer, rows, q_start, batch, k_start=k_start)
    else:
        probe.on_pattern(layer, torch.nn.functional.pad(rows, (k_start, 0)), q_start, batch)


def takes_band(probe: StreamingProbe) -> bool:
    """Whether the probe's `on_pattern` takes rows over a band of keys (a `k_start` argument)."""
    return "k_start" in inspect.signature(probe.on_pattern).parameters


def supports(model: LoadedModel, probes: Sequence[object]) -> bool:
    """Whether the fast path can serve these probes on this model."""
    if not probes or not all(isinstance(probe, StreamingProbe) for probe in probes):
        return False
    try:
        layers = bridge.decoder_layers(bridge.hf_model(model))
    except NotImplementedError:
        return False
    return len(layers) == model.info.n_layers


def run_batch(
    model: LoadedModel,
    batch: Batch,
    probes: Sequence[StreamingProbe],
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """One batch through the fast path: same calls to the probes as the bridge path makes."""
    bridge.register_attention(ATTENTION_NAME, streaming_attention)
    for probe in probes:
        probe.start_batch(batch)
    resid_readers = [probe for probe in probes if "resid_pre" in probe.reads]

    def resid_hook(layer: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            resid = args[0] if args else kwargs["hidden_states"]
            for probe in resid_readers:
                probe.on_resid_pre(layer, resid, batch)

        return hook

    token = _ACTIVE.set(_Consumer(probes, batch, chunk_bytes))
    handles = []
    try:
        with bridge.unbridged_model(model, ATTENTION_NAME) as hf_model:
            if resid_readers:
                for layer, module in enumerate(bridge.decoder_layers(hf_model)):
                    handles.append(
                        module.register_forward_pre_hook(resid_hook(layer), with_kwargs=True)
                    )
            base = getattr(hf_model, "model", hf_model)  # skip the unembedding: no logits needed
            base(input_ids=batch.tokens, attention_mask=batch.attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(token)
    for probe in probes:
        probe.end_batch(batch)
