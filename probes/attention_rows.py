"""Exact softmax attention rows from a layer's post-rotary queries and keys, and their output.

One implementation for both readers of rows: the streaming fast path (`probes.engine.fast`,
query chunks of a whole pass) and the retrieval probe's fused decode
(`probes.families.retrieval_decode`, the one row of each decoding step). It sits below both
layers so that neither copies the other's scoring, masking and softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float

from probes import bridge

# Query rows per chunk: enough for the two matmuls to run efficiently, few enough for a chunk's
# rows to stay near the cache. One SmolLM2 layer at 8k keys on 2 cores took 1.3x as long with
# 14 rows (the old fixed 4 MB) and 1.15x with 113 rows as with 56; at 1k-4k keys, 28-113 rows
# were within this machine's noise.
CHUNK_QUERIES = 64
CHUNK_BYTES = 64 * 2**20  # and never more than this much of fp32 rows (big batches, long T)

# Called with each chunk's rows, its first query and first key, and the rows' entropy (or None).
OnRows = Callable[[torch.Tensor, int, int, "torch.Tensor | None"], None]


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
    scores, may_be_empty = masked_scores(
        query, key, attention_mask, scaling, q_start, q_stop, softcap, band, workspace
    )
    if workspace is None:
        rows = torch.softmax(scores, dim=-1, dtype=torch.float32)
    else:  # in place when the scores are float32: the softmax reads each row before writing it
        out = scores if scores.dtype == torch.float32 else None
        out = (
            workspace.take("rows", scores.shape, torch.float32, scores.device)
            if out is None
            else out
        )
        rows = torch.softmax(scores, dim=-1, dtype=torch.float32, out=out)
    if may_be_empty:  # softmax over no key is NaN; those rows are padding: zero, not NaN
        rows.nan_to_num_(0.0)
    return rows


def pattern_rows_and_entropy(
    query: Float[torch.Tensor, "batch head q_pos d_head"],
    key: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Mask,
    scaling: float,
    q_start: int,
    q_stop: int,
    softcap: float | None = None,
    band: tuple[int, int] | None = None,
    workspace: Workspace | None = None,
) -> tuple[
    Float[torch.Tensor, "batch head q_chunk band"], Float[torch.Tensor, "batch head q_chunk"]
]:
    """`pattern_rows` (the same rows, bit for bit) and each row's entropy in nats, from the
    scores rather than from a log of every row entry:

        H = −Σ P·log P = log Z − Σ P·(s − max s),   Z = Σ exp(s − max s) = 1 / max P.

    Both terms are ≥ 0 and at most log(keys), so nothing cancels. On SmolLM2 at 8k tokens the
    log form of one layer's rows took about twice as long. An empty row's entropy is 0.
    """
    scores, may_be_empty = masked_scores(
        query, key, attention_mask, scaling, q_start, q_stop, softcap, band, workspace
    )
    if scores.dtype != torch.float32:  # the softmax reads low-precision scores as float32 too
        into = None if workspace is None else workspace.take(
            "scores32", scores.shape, torch.float32, scores.device
        )  # fmt: skip
        scores = scores.float() if into is None else into.copy_(scores)
    # Shifted by the row's max (the softmax does the same); a masked key's −inf becomes the
    # lowest float, whose weight is still exactly 0 but whose product with it is 0, not NaN.
    shifted = scores.sub_(scores.amax(-1, keepdim=True)).clamp_(min=torch.finfo(torch.float32).min)
    out = None if workspace is None else workspace.take(
        "rows", shifted.shape, torch.float32, shifted.device
    )  # fmt: skip
    rows = torch.softmax(shifted, dim=-1, out=out) if out is not None else shifted.softmax(-1)
    entropy = rows.amax(-1).log_().neg_() - torch.einsum("bhqk,bhqk->bhq", rows, shifted)
    if may_be_empty:  # a row over no key is NaN from its first step: padding, so zero
        rows.nan_to_num_(0.0)
        entropy.nan_to_num_(0.0)
    return rows, entropy


def masked_scores(
    query: Float[torch.Tensor, "batch head q_pos d_head"],
    key: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Mask,
    scaling: float,
    q_start: int,
    q_stop: int,
    softcap: float | None = None,
    band: tuple[int, int] | None = None,
    workspace: Workspace | None = None,
) -> tuple[Float[torch.Tensor, "batch head q_chunk band"], bool]:
    """The scaled scores of `pattern_rows` (in the query's dtype), −inf where masked, and
    whether a row may have no visible key at all (then its softmax is NaN)."""
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
    return scores, may_be_empty


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


def chunk_rows(
    n_batch: int, n_heads: int, n_keys: int, mask: Mask, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Query rows per chunk: CHUNK_QUERIES, fewer where their fp32 rows over the widest band a
    chunk can need (all `n_keys`, or a sliding window's) would pass `chunk_bytes`."""
    window = mask.window if isinstance(mask, bridge.ChunkedMask) else None
    widest = n_keys if window is None else min(n_keys, window + CHUNK_QUERIES)
    return max(1, min(CHUNK_QUERIES, chunk_bytes // (4 * n_batch * n_heads * widest)))


def chunked_attention(
    query: Float[torch.Tensor, "batch head q_pos d_head"],
    key: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    value: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Mask,
    scaling: float,
    softcap: float | None = None,
    *,
    step: int,
    workspace: Workspace,
    on_rows: OnRows | None = None,
    with_entropy: bool = False,
) -> Float[torch.Tensor, "batch head q_pos d_head"]:
    """Exact attention output, `step` query rows at a time, each chunk's `pattern_rows` (and,
    `with_entropy`, their entropy) handed to `on_rows` before they are multiplied into the
    values. Peak memory: one chunk's rows over its band of keys."""
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    output = query.new_empty(*query.shape[:-1], value.shape[-1])
    for q_start in range(0, n_queries, step):
        q_stop = min(q_start + step, n_queries)
        band = key_band(attention_mask, n_queries, n_keys, q_start, q_stop)
        inputs = (query, key, attention_mask, scaling, q_start, q_stop, softcap, band, workspace)
        if with_entropy:
            rows, entropy = pattern_rows_and_entropy(*inputs)
        else:
            rows, entropy = pattern_rows(*inputs), None
        if on_rows is not None:
            on_rows(rows, q_start, band[0], entropy)
        output[:, :, q_start:q_stop] = rows_times_values(rows, value, band[0])
    return output


def attention_without_rows(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function for a layer whose rows nobody reads, under the fast
    path's chunked mask. SDPA, except on a sliding-window layer: SDPA would need the T×T mask
    built (256 MB of booleans at 16k tokens) and would still visit every key, while the rows over
    the window cost O(T·window)."""
    windowed = isinstance(attention_mask, bridge.ChunkedMask) and attention_mask.window is not None
    if not windowed or module.training:
        if isinstance(attention_mask, bridge.ChunkedMask):
            attention_mask = attention_mask.for_sdpa()
        return bridge.sdpa_attention(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    n_batch, n_heads, _, _ = query.shape
    step = chunk_rows(n_batch, n_heads, key.shape[-2], attention_mask)
    output = chunked_attention(
        query, key, value, attention_mask, scale, kwargs.get("softcap"),
        step=step, workspace=Workspace(),
    )  # fmt: skip
    return output.transpose(1, 2).contiguous(), None
