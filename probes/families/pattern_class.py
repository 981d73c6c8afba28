"""The sparse-attention pattern class of each head, profiled as MInference does: by the recall
of candidate masks (the share of a query's attention that a mask keeps), estimated cheaply from
the last queries of each prompt.

MInference (microsoft/MInference, `search_pattern`) scores "stream_llm" (first columns plus a
band by the diagonal), "vertical_and_slash" (the top columns and diagonals, chosen from the last
64 queries' attention, with the first columns and the nearest diagonals always kept) and
"block_sparse" (the top key blocks per query block), and keeps the best recall. Here every mask
keeps the same budget B of keys per query, B = max(⌈density·n⌉, n_init + 1) for an n-token prompt:
    local           the B nearest keys (a band by the diagonal)
    sink            the first n_init keys and the B − n_init nearest (StreamingLLM's A-shape)
    vertical_slash  B/2 columns and B − B/2 diagonals with the most attention
    block_sparse    per query block, the B/block_size key blocks with the most attention
and a head takes the first class in that order whose recall reaches `recall_threshold` — the
simplest mask that explains its attention, since the later masks can imitate the earlier ones —
or "diffuse" if none does. Columns, diagonals and blocks are chosen from the same last queries
the recall is measured on, so the two data-driven masks get an optimistic (oracle) recall.

Streaming: the masks need all of a prompt's last queries at once (columns and diagonals are
chosen from their summed attention). Pattern rows may arrive in query chunks (the fast path), so
the probe copies each profiled prompt's last rows out of whichever chunks hold them and scores
that prompt and layer as soon as its last row has arrived; it holds one layer's last rows at most
while the layers run in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float

from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams

MASKS = ("local", "sink", "vertical_slash", "block_sparse")
CLASSES = (*MASKS, "diffuse")


def key_budget(n_positions: int, density: float, n_init: int) -> int:
    """Keys each candidate mask keeps per query."""
    return max(math.ceil(density * n_positions), n_init + 1)


def _top_mask(mass: torch.Tensor, k: int, forced: int) -> torch.Tensor:
    """Bool mask over the last dim: the first `forced` entries plus the top entries by `mass`,
    k in all."""
    mass = mass.clone()
    mass[..., :forced] = float("inf")
    k = min(k, mass.shape[-1])
    chosen = torch.zeros_like(mass, dtype=torch.bool)
    return chosen.scatter(-1, mass.topk(k, dim=-1).indices, True)


def candidate_masks(
    rows: Float[torch.Tensor, "head q_pos k_pos"],
    first_query: int,
    budget: int,
    n_init: int,
    block_size: int,
) -> dict[str, Bool[torch.Tensor, "head q_pos k_pos"]]:
    """The four masks for the attention `rows` of queries first_query, first_query+1, … of one
    prompt over its keys 0..n−1; each keeps `budget` keys per query (the block mask up to
    rounding to whole blocks)."""
    n_heads, n_queries, n_keys = rows.shape
    device = rows.device
    query = torch.arange(first_query, first_query + n_queries, device=device)[:, None]
    key = torch.arange(n_keys, device=device)[None, :]
    lag = query - key  # ≥ 0 where visible
    visible = lag >= 0
    local = visible & (lag < budget)
    sink = visible & ((key < n_init) | (lag < budget - n_init))

    n_vertical = max(budget // 2, n_init)
    n_slash = max(budget - n_vertical, n_init)
    columns = _top_mask(rows.sum(1), n_vertical, n_init)  # [head, k]
    diagonal_mass = torch.zeros(n_heads, n_keys, device=device, dtype=rows.dtype)
    diagonal_mass.scatter_add_(
        1, lag.clamp(min=0).flatten()[None].expand(n_heads, -1), (rows * visible).flatten(1)
    )
    diagonals = _top_mask(diagonal_mass, n_slash, n_init)  # [head, lag]
    on_diagonal = diagonals.gather(1, lag.clamp(min=0).flatten()[None].expand(n_heads, -1))
    vertical_slash = visible & (columns[:, None, :] | on_diagonal.view(n_heads, n_queries, n_keys))

    query_block = (query // block_size).flatten()
    key_block = (key // block_size).flatten()
    n_qb, n_kb = int(query_block.max()) + 1, int(key_block.max()) + 1
    block_mass = torch.zeros(n_heads, n_qb, n_kb, device=device, dtype=rows.dtype)
    cell = (query_block[:, None] * n_kb + key_block[None, :]).flatten()
    block_mass.view(n_heads, -1).scatter_add_(1, cell[None].expand(n_heads, -1), rows.flatten(1))
    n_blocks = max(1, round(budget / block_size))
    blocks = _top_mask(block_mass, n_blocks, 0)  # [head, query block, key block]
    block_sparse = visible & blocks[:, query_block][:, :, key_block]
    return {
        "local": local.expand_as(rows),
        "sink": sink.expand_as(rows),
        "vertical_slash": vertical_slash,
        "block_sparse": block_sparse,
    }


def mask_recall(
    rows: Float[torch.Tensor, "head q_pos k_pos"], mask: Bool[torch.Tensor, "head q_pos k_pos"]
) -> Float[torch.Tensor, " head"]:
    """Mean over queries of the attention the mask keeps."""
    return (rows * mask).sum(-1).mean(-1)


def classify(recall: dict[str, float], threshold: float) -> str:
    """The first mask class whose recall reaches `threshold`, else "diffuse"."""
    return next((name for name in MASKS if recall[name] >= threshold), "diffuse")


@dataclass(frozen=True)
class PatternClassParams(ProbeParams):
    """Parameters of the pattern-class probe (MInference's): queries profiled, the density each
    candidate mask keeps, initial tokens, block size, the recall a class needs, the shortest
    prompt profiled."""

    last_queries: int = 64  # MInference estimates from the last 64 queries
    density: float = 0.125  # keys per query each mask keeps, as a fraction of the prompt
    n_init: int = 4  # StreamingLLM's initial (sink) tokens; also always-kept columns/diagonals
    block_size: int = 16
    recall_threshold: float = 0.9
    min_length: int = 128  # shorter prompts are not profiled (every mask would hold them whole)

    def check(self) -> None:
        self.require(0 < self.density < 1, "density", "in (0, 1)")
        self.require(0 < self.recall_threshold <= 1, "recall_threshold", "in (0, 1]")
        for name in ("last_queries", "n_init", "block_size", "min_length"):
            self.require(getattr(self, name) >= 1, name, "at least 1")


@register_probe
class PatternClassProbe(StreamingProbe[PatternClassParams]):
    """Rows per head: "recall_<mask>" for each candidate mask (mean over profiled prompts), and
    "pattern_class" with condition = the class and value = its mask's recall (for "diffuse",
    the best recall of any mask)."""

    name = "pattern_class"
    Params = PatternClassParams
    description = (
        "sink / local / vertical-slash / block-sparse / diffuse by mask recall (MInference)"
    )
    totals = totals_of(recall_sum="sum", n_profiled="sum")

    def __init__(self, info: ModelInfo, params: PatternClassParams | None = None) -> None:
        super().__init__(info, params)
        self.recall_sum = torch.zeros(len(MASKS), info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_profiled = 0
        # This batch only: profiled prompt index -> (first, n), the last queries first:n; and
        # (layer, prompt index) -> (their rows so far [head, n − first, n], rows filled).
        self._windows: dict[int, tuple[int, int]] = {}
        self._pending: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}

    def start_batch(self, batch: Batch) -> None:
        p = self.params
        self._windows = {
            index: (length - min(p.last_queries, length), length)
            for index, length in enumerate(batch.lengths.tolist())
            if length >= p.min_length
        }
        self._pending = {}

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        q_stop = q_start + rows.shape[2]
        for index, (first, n) in self._windows.items():
            low, high = max(first, q_start), min(n, q_stop)
            if low >= high:
                continue  # none of this prompt's last queries is in the chunk
            part = rows[index, :, low - q_start : high - q_start, : max(0, n - k_start)].float()
            if k_start:  # a prompt's few last queries: their rows from key 0 (zeros before)
                part = torch.nn.functional.pad(part, (k_start, 0))
            if (low, high) == (first, n):  # the whole window in one chunk: no copy
                self._fold(layer, part, first)
                continue
            buffer, filled = self._pending.get((layer, index), (None, 0))
            if buffer is None:
                buffer = part.new_zeros(part.shape[0], n - first, n)
            buffer[:, low - first : high - first, : part.shape[-1]] = part  # the rest is zero
            filled += high - low
            if filled < n - first:
                self._pending[layer, index] = (buffer, filled)
            else:
                self._pending.pop((layer, index), None)
                self._fold(layer, buffer, first)

    def _fold(self, layer: int, rows: torch.Tensor, first: int) -> None:
        """Add one prompt's recalls: `rows` are its queries first… over its keys, [head, q, k]."""
        p = self.params
        budget = key_budget(rows.shape[-1], p.density, p.n_init)
        masks = candidate_masks(rows, first, budget, p.n_init, p.block_size)
        for slot, name in enumerate(MASKS):
            self.recall_sum[slot, layer] += mask_recall(rows, masks[name]).double().cpu()

    def end_batch(self, batch: Batch) -> None:
        if self._pending:
            layer, index = next(iter(self._pending))
            raise RuntimeError(
                f"probe {self.name!r}: the last query rows of prompt {batch.prompt_ids[index]!r} "
                f"in layer {layer} never all arrived"
            )
        self.n_profiled += len(self._windows)
        self._windows = {}

    def rows(self) -> list[dict[str, Any]]:
        if self.n_profiled == 0:
            return []
        recall = self.recall_sum / self.n_profiled
        rows: list[dict[str, Any]] = []
        for layer in range(self.info.n_layers):
            for head in range(self.info.n_heads):
                base = {"layer": layer, "head": head}
                by_mask = {
                    name: recall[slot, layer, head].item() for slot, name in enumerate(MASKS)
                }
                for name, value in by_mask.items():
                    rows.append({**base, "metric": f"recall_{name}", "value": value})
                chosen = classify(by_mask, self.params.recall_threshold)
                value = max(by_mask.values()) if chosen == "diffuse" else by_mask[chosen]
                rows.append(
                    {**base, "metric": "pattern_class", "condition": chosen, "value": value}
                )
        return rows
