"""The top keys of every query of a few prompts: what the dashboard's token view draws.

For each stored prompt, layer, head and query position q, the probe keeps the k keys that q
attends to most (k = 8 by default) and their weights, largest first, instead of the T×T pattern:

    keys[q]    = the min(k, q + 1) keys κ ≤ q with the largest A[q, κ]   (query q sees q + 1 keys)
    weights[q] = A[q, keys[q]]

It streams: each chunk of pattern rows is cut down as it arrives (on the fast path 64 query rows
of one layer; on the bridge path one layer's pattern, 64 queries at a time), by a blocked search
exact in the weights (`top_keys`: no mask or copy of the whole band), and only the top keys are
kept, so no layer's T×T pattern outlives its layer. A StreamingProbe, so the default scan
keeps the fast path; while the pass runs it holds int32 keys and float32 weights (8 bytes an
entry: 4.4 MB per prompt at 256 tokens on SmolLM2, 35 MB at 2,048).
On `headlab bench`'s one 4,096-token sequence (SmolLM2, cProfile, 2026-12-02) it took 2.4 s of
the scan's 20.6 s, mostly `torch.topk`.

Storage: side table "top_keys", one row per (prompt, layer, head) with the lists `keys` (uint16;
int32 past 65,536 tokens) and `weights` (uint8: round(255 · A), so within 1/510 of A), query
after query, min(k, q + 1) entries for query q, so no offsets are stored; side table
"top_keys_prompts", one row per prompt: ids, token text, length and the k it was stored with.
Per prompt of T ≥ k tokens that is n_layers × n_heads × (k·T − k(k−1)/2) entries of 3 bytes
(`stored_bytes`). Measured on SmolLM2-135M (30 layers × 9 heads, k = 8): at T = 2,048, 4,416,120
entries, 13.2 MB of arrays, 9.5 MB of parquet; at the default scan's 256 tokens, 1.6 MB of
arrays, 1.0 MB of parquet (float16 weights took 13.5 MB of parquet at 2,048 tokens).

Rows (probe "top_keys"): metric "top_k_mass", one per head: the mean over the stored prompts'
queries of Σ weights[q], the share of the head's attention the token view shows (1 = all of it;
a head spreading evenly over its q + 1 keys has min(k, q + 1)/(q + 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from probes.core import schema
from probes.core.errors import ConfigError
from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams
from probes.models import LoadedModel, decode_text

MAX_K = 64  # keys kept per query at most
WEIGHT_STEPS = schema.TOP_KEYS_WEIGHT_STEPS  # a weight is the byte round(255 · A): ±1/510
UINT16_TOKENS = 2**16  # longer prompts store their keys as int32
KEY_BLOCK = 64  # keys per block of the blocked search over keys every query of a chunk sees
QUERY_BLOCK = 64  # queries ranked at once: a longer chunk (the bridge's T × T) is cut into these


def quantized(weights: np.ndarray) -> np.ndarray:
    """Attention weights in [0, 1] as bytes, round(255 · w); `dequantized` inverts within 1/510."""
    return np.rint(np.clip(weights, 0.0, 1.0) * WEIGHT_STEPS).astype(np.uint8)


def dequantized(stored: np.ndarray) -> np.ndarray:
    """Stored weight bytes back to weights in [0, 1]."""
    return stored.astype(np.float32) / WEIGHT_STEPS


def entries_per_head(length: int, k: int) -> int:
    """Stored (key, weight) pairs of one head on a prompt of `length` tokens: Σ_q min(k, q+1)."""
    return sum(min(k, query + 1) for query in range(length))


def stored_bytes(n_layers: int, n_heads: int, length: int, k: int) -> int:
    """Bytes of one prompt's stored top keys: entries × (uint16 key + one weight byte)."""
    key_bytes = 2 if length <= UINT16_TOKENS else 4
    return n_layers * n_heads * entries_per_head(length, k) * (key_bytes + 1)


def top_keys(
    rows: Float[torch.Tensor, "head q_chunk visible"], q_start: int, k: int, k_start: int = 0
) -> tuple[Int[torch.Tensor, "head q_chunk top"], Float[torch.Tensor, "head q_chunk top"]]:
    """The min(k, visible) largest weights of each row (query q_start + i, over keys k_start…)
    and their keys, largest first, among the keys each query can see (κ ≤ q): a key past the
    query ranks below every real one, so it is picked only when the query sees fewer than k.
    The weights equal torch.topk's of the masked rows exactly; keys of tied weights may differ."""
    n_queries = rows.shape[-2]
    if n_queries <= QUERY_BLOCK:
        return _top_keys_of_chunk(rows, q_start, k, k_start)
    parts = [
        _top_keys_of_chunk(rows[..., start : start + QUERY_BLOCK, :], q_start + start, k, k_start)
        for start in range(0, n_queries, QUERY_BLOCK)
    ]
    return torch.cat([keys for keys, _ in parts], -2), torch.cat([w for _, w in parts], -2)


def _top_keys_of_chunk(
    rows: Float[torch.Tensor, "head q_chunk visible"], q_start: int, k: int, k_start: int
) -> tuple[Int[torch.Tensor, "head q_chunk top"], Float[torch.Tensor, "head q_chunk top"]]:
    """`top_keys` of a few queries. Keys before q_start are seen by every query: they need no
    mask, and whole blocks of them are skipped (`_best_blocks`). The rest (the diagonal block,
    then up to `width` keys past it, so that a query seeing fewer than k keys still gets `width`
    entries) is masked: a copy of a few columns, never of the whole band."""
    n_queries, visible = rows.shape[-2:]
    width = min(k, visible)
    seen_by_all = min(max(q_start - k_start, 0), visible)  # columns of keys κ < q_start
    n_blocks = seen_by_all // KEY_BLOCK
    if n_blocks <= width:  # too few blocks to skip any: rank every column
        n_blocks = 0
    rest_start = n_blocks * KEY_BLOCK
    rest_stop = min(visible, max(seen_by_all, q_start + n_queries - k_start) + width)
    queries = torch.arange(q_start, q_start + n_queries, device=rows.device)[:, None]
    rest_keys = torch.arange(k_start + rest_start, k_start + rest_stop, device=rows.device)
    rest = rows[..., rest_start:rest_stop].float().masked_fill(rest_keys > queries, -1.0)
    if not n_blocks:
        weights, picked = rest.topk(width, dim=-1)
        return picked + (k_start + rest_start), weights
    best, inside = _best_blocks(rows[..., :rest_start], width)
    weights, picked = torch.cat([inside.float(), rest], -1).topk(width, dim=-1)
    n_inside = width * KEY_BLOCK
    block = best.gather(-1, (picked // KEY_BLOCK).clamp_(max=width - 1))
    keys = torch.where(
        picked < n_inside, block * KEY_BLOCK + picked % KEY_BLOCK, picked - n_inside + rest_start
    )
    return keys + k_start, weights


def _best_blocks(
    seen: Float[torch.Tensor, "head q_chunk keys"], width: int
) -> tuple[Int[torch.Tensor, "head q_chunk top"], Float[torch.Tensor, "head q_chunk cells"]]:
    """Per row, its `width` blocks of KEY_BLOCK keys with the largest maxima, and their weights
    (block after block). The row's `width` largest weights are among those: each chosen block
    holds a weight (its max) ≥ every weight of every other block, so a weight outside them has
    `width` weights at least as large inside them (a tie at the last place is filled with an
    equal weight either way)."""
    blocks = seen.unflatten(-1, (-1, KEY_BLOCK))  # a view: [..., n_blocks, KEY_BLOCK]
    best = blocks.amax(-1).topk(width, dim=-1, sorted=False).indices
    # Advanced indexing copies whole blocks; a gather with an expanded index was 2.5× slower.
    leading = [
        torch.arange(size, device=seen.device).view([-1] + [1] * (best.dim() - 1 - dim))
        for dim, size in enumerate(best.shape[:-1])
    ]
    return best, blocks[(*leading, best)].flatten(-2)


def kept(length: int, k: int) -> Float[torch.Tensor, "q_pos top"]:
    """[query, rank] mask of the entries stored: the first min(k, q + 1) of query q."""
    counts = torch.clamp(torch.arange(length) + 1, max=k)
    return (torch.arange(k)[None, :] < counts[:, None]).float()


@dataclass(frozen=True)
class TopKeysParams(ProbeParams):
    """Parameters of the top-keys probe: which prompts it keeps (the first n the engine feeds,
    or named ids) and how many keys per query."""

    n_prompts: int = 1  # the first n prompts the engine feeds (shortest first), unless named
    prompt_ids: tuple[str, ...] = ()  # keep exactly these prompts instead
    k: int = 8  # keys kept per query; at most MAX_K

    def check(self) -> None:
        self.require(1 <= self.k <= MAX_K, "k", f"in [1, {MAX_K}]")
        self.require(self.n_prompts >= 1 or bool(self.prompt_ids), "n_prompts", "at least 1")


def _stored(ids: list[int], k: int) -> dict[str, Any]:
    """One prompt's top keys as plain values (a sharded scan saves them with torch.save and
    loads them weights-only): ids, k = min(params.k, length), and per layer `keys` and
    `weights` [head, q_pos, k] (int32, float32)."""
    return {"ids": ids, "k": k, "keys": {}, "weights": {}}


@register_probe
class TopKeysProbe(StreamingProbe[TopKeysParams]):
    """The top-k keys and weights of every query of a few prompts, for every head (side tables
    "top_keys" and "top_keys_prompts") and per head the attention mass they hold (rows
    "top_k_mass"); see the module docstring."""

    name = "top_keys"
    Params = TopKeysParams
    description = "the top keys of every query of a few prompts, for the dashboard's token view"

    totals = totals_of(stored="dict")  # prompt id -> its top keys (a prompt is in one batch)

    def __init__(self, info: ModelInfo, params: TopKeysParams | None = None) -> None:
        super().__init__(info, params)
        self.stored: dict[str, dict[str, Any]] = {}
        self.decode: Callable[[list[int]], str] | None = None  # set by bind
        self._rows: dict[int, str] = {}  # row in the current batch -> prompt id

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda ids: decode_text(tokenizer, ids)

    def _wanted(self, prompt_id: str) -> bool:
        if prompt_id in self.stored:
            raise ValueError(f"top_keys probe: prompt id {prompt_id!r} was fed twice")
        if self.params.prompt_ids:
            return prompt_id in self.params.prompt_ids
        return len(self.stored) < self.params.n_prompts

    def start_batch(self, batch: Batch) -> None:
        self._rows = {}
        for row, prompt_id in enumerate(batch.prompt_ids):
            if self._wanted(prompt_id):
                length = int(batch.lengths[row])
                ids = batch.tokens[row, :length].tolist()
                self.stored[prompt_id] = _stored(ids, min(self.params.k, length))
                self._rows[row] = prompt_id

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        for row, prompt_id in self._rows.items():
            stored = self.stored[prompt_id]
            length = len(stored["ids"])
            n_queries = max(0, min(rows.shape[2], length - q_start))
            if n_queries == 0:
                continue
            chunk, first = rows[row, :, :n_queries, : max(0, length - k_start)], k_start
            if k_start and q_start - k_start + 1 < stored["k"]:  # < k band keys: rank from 0
                chunk, first = torch.nn.functional.pad(chunk, (k_start, 0)), 0
            keys, weights = top_keys(chunk, q_start, stored["k"], first)
            if layer not in stored["keys"]:
                shape = (rows.shape[1], length, stored["k"])
                stored["keys"][layer] = torch.zeros(shape, dtype=torch.int32)
                stored["weights"][layer] = torch.zeros(shape, dtype=torch.float32)
            width = keys.shape[-1]  # < stored["k"] only where the chunk sees fewer keys than k
            where = slice(q_start, q_start + n_queries)
            stored["keys"][layer][:, where, :width] = keys.to(torch.int32).cpu()
            stored["weights"][layer][:, where, :width] = weights.cpu()

    def end_batch(self, batch: Batch) -> None:
        self._rows = {}

    def _check_fed(self) -> None:
        missing = sorted(set(self.params.prompt_ids) - set(self.stored))
        if missing:
            raise ConfigError(
                f"top_keys probe: prompt ids {missing} were never fed "
                f"(fed: {sorted(self.stored) or 'none of those asked for'})"
            )

    def rows(self) -> list[dict[str, Any]]:
        self._check_fed()
        mass: dict[int, list[torch.Tensor]] = {}  # layer -> [head, q_pos] per prompt
        for stored in self.stored.values():
            mask = kept(len(stored["ids"]), stored["k"])
            for layer, weights in stored["weights"].items():
                mass.setdefault(layer, []).append((weights * mask).sum(-1))
        rows: list[dict[str, Any]] = []
        for layer, per_prompt in sorted(mass.items()):
            means = torch.cat(per_prompt, dim=1).double().mean(dim=1).tolist()
            rows.extend(
                {"metric": "top_k_mass", "layer": layer, "head": head, "value": value}
                for head, value in enumerate(means)
            )
        return rows

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stored top keys (side table "top_keys") and the prompts' tokens
        ("top_keys_prompts")."""
        self._check_fed()
        records: list[dict[str, Any]] = []
        for prompt_id, stored in self.stored.items():
            length = len(stored["ids"])
            mask = kept(length, stored["k"]).bool().numpy()
            key_type = np.uint16 if length <= UINT16_TOKENS else np.int32
            for layer in sorted(stored["keys"]):
                keys = stored["keys"][layer].numpy()
                weights = stored["weights"][layer].numpy()
                records.extend(
                    {
                        "prompt": prompt_id,
                        "layer": layer,
                        "head": head,
                        "keys": keys[head][mask].astype(key_type),
                        "weights": quantized(weights[head][mask]),
                    }
                    for head in range(keys.shape[0])
                )
        prompts = [
            {
                "prompt": prompt_id,
                "ids": list(stored["ids"]),
                "text": [self.decode([t]) for t in stored["ids"]] if self.decode else None,
                "length": len(stored["ids"]),
                "k": stored["k"],
            }
            for prompt_id, stored in self.stored.items()
        ]
        columns = ["prompt", "layer", "head", "keys", "weights"]
        return {
            schema.TOP_KEYS_TABLE: pd.DataFrame(records, columns=columns),
            schema.TOP_KEYS_PROMPTS_TABLE: pd.DataFrame(
                prompts, columns=["prompt", "ids", "text", "length", "k"]
            ),
        }
