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
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from probes import bridge
from probes.attention_rows import (
    CHUNK_BYTES,
    Workspace,
    attention_without_rows,
    chunk_rows,
    chunked_attention,
)
from probes.core.probe import StreamingProbe
from probes.core.types import Batch
from probes.models import LoadedModel

ATTENTION_NAME = "headlab_streaming"


@dataclass
class _Consumer:
    probes: Sequence[StreamingProbe]
    batch: Batch
    chunk_bytes: int
    workspace: Workspace = field(default_factory=Workspace)


_ACTIVE: ContextVar[_Consumer | None] = ContextVar("headlab_fastpath_consumer", default=None)


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
        return attention_without_rows(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = module.layer_idx
    if not isinstance(layer, int):
        raise TypeError(f"attention module {type(module).__name__} has no integer layer_idx")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    n_batch, n_heads = query.shape[:2]
    step = chunk_rows(n_batch, n_heads, key.shape[-2], attention_mask, consumer.chunk_bytes)

    def to_readers(rows: torch.Tensor, q_start: int, k_start: int, entropy: Any) -> None:
        for probe in readers:
            feed(probe, layer, rows, q_start, k_start, consumer.batch, entropy)

    output = chunked_attention(
        query, key, value, attention_mask, scale, kwargs.get("softcap"),
        step=step, workspace=consumer.workspace, on_rows=to_readers,
        with_entropy=any("row_entropy" in probe.reads for probe in readers),
    )  # fmt: skip
    return output.transpose(1, 2).contiguous(), None


def feed(
    probe: StreamingProbe,
    layer: int,
    rows: torch.Tensor,
    q_start: int,
    k_start: int,
    batch: Batch,
    entropy: torch.Tensor | None = None,
) -> None:
    """Hand a probe rows over keys k_start…: as a band when its `on_pattern` takes `k_start`,
    else padded with the zeros before the band (exact, but O(T) per row again); and the rows'
    entropy when the probe reads "row_entropy" and it was computed."""
    extra: dict[str, Any] = {}
    if entropy is not None and "row_entropy" in probe.reads:
        extra["entropy"] = entropy
    if k_start == 0:
        probe.on_pattern(layer, rows, q_start, batch, **extra)
    elif takes_band(probe):
        probe.on_pattern(layer, rows, q_start, batch, k_start=k_start, **extra)
    else:
        rows = torch.nn.functional.pad(rows, (k_start, 0))
        probe.on_pattern(layer, rows, q_start, batch, **extra)


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
