"""Pooled attention patterns of a few prompts, small enough to keep with a run.

The dashboard's head-detail view draws a head's attention on a stored prompt. A full pattern is
T×T per head, so each prompt's tokens are cut into at most `max_blocks` contiguous blocks and

    pooled[qb, kb] = mean over queries q in block qb of Σ_{k in block kb} A[q, k]

is kept: the attention mass a query of block qb sends to block kb. Every pooled row still sums
to 1, and with one token per block (T ≤ max_blocks) it is the pattern itself. Blocks above the
diagonal are zero under the causal mask and are not stored.

Rows (probe "pattern"): metric "attention" with layer, head, prompt, position = query block,
key_position = key block, value = pooled mass. Side table "pattern_prompts": one row per prompt
with its token ids, token text and block starts.
Size: n_prompts × n_layers × n_heads × B(B+1)/2 rows; SmolLM2 (30 × 9 heads) with the defaults
(2 prompts, B = 32) stores 285,120 rows, a few MB of parquet. B is capped at 64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float

from probes.core import schema
from probes.core.errors import ConfigError
from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams
from probes.models import LoadedModel, decode_text

MAX_BLOCKS = 64  # keeps a stored pattern at ≤ 2,080 cells per head and prompt


def block_starts(length: int, max_blocks: int) -> list[int]:
    """First token of each of min(length, max_blocks) contiguous, near-equal blocks."""
    if length < 1 or max_blocks < 1:
        raise ValueError(f"need length ≥ 1 and max_blocks ≥ 1, got {length} and {max_blocks}")
    n_blocks = min(length, max_blocks)
    return [index * length // n_blocks for index in range(n_blocks)]


def block_membership(length: int, starts: Sequence[int]) -> Float[torch.Tensor, "pos block"]:
    """One-hot [position, block] matrix of which block each of `length` positions is in."""
    boundaries = torch.tensor(list(starts[1:]), dtype=torch.long)
    block_of = torch.bucketize(torch.arange(length), boundaries, right=True)
    return torch.nn.functional.one_hot(block_of, len(starts)).float()


def pool_pattern(
    pattern: Float[torch.Tensor, "head q_pos k_pos"], starts: Sequence[int]
) -> Float[torch.Tensor, "head q_block k_block"]:
    """Mean over each query block of the attention mass sent to each key block."""
    membership = block_membership(pattern.shape[-1], starts).to(pattern)
    mass = torch.einsum("qb,hqk,kc->hbc", membership, pattern, membership)
    return mass / membership.sum(0)[None, :, None]


@dataclass(frozen=True)
class PatternParams(ProbeParams):
    """Parameters of the pattern probe: which prompts it keeps (the first n, or named ids) and
    how many blocks of tokens per axis their pooled patterns have."""

    n_prompts: int = 2  # the first n prompts the engine feeds (shortest first), unless named
    prompt_ids: tuple[str, ...] = ()  # snapshot exactly these prompts instead
    max_blocks: int = 32  # blocks per axis; at most MAX_BLOCKS

    def check(self) -> None:
        self.require(1 <= self.max_blocks <= MAX_BLOCKS, "max_blocks", f"in [1, {MAX_BLOCKS}]")
        self.require(self.n_prompts >= 1 or bool(self.prompt_ids), "n_prompts", "at least 1")


@dataclass
class _Snapshot:
    ids: list[int]
    starts: list[int]
    mass: dict[int, torch.Tensor]  # layer -> [head, B, B], attention mass summed over queries


@register_probe
class PatternSnapshotProbe(StreamingProbe[PatternParams]):
    """Pooled attention patterns of a few prompts for every head (rows "attention": query block,
    key block, mass) and their tokens (side table "pattern_prompts"); see the module docstring."""

    name = "pattern"
    Params = PatternParams
    description = "pooled attention patterns of a few prompts, for the dashboard's head detail"
    totals = totals_of(snapshots="dict")

    def __init__(self, info: ModelInfo, params: PatternParams | None = None) -> None:
        super().__init__(info, params)
        self.snapshots: dict[str, _Snapshot] = {}
        self.decode: Callable[[list[int]], str] | None = None  # set by bind
        self._rows: dict[int, str] = {}  # row in the current batch -> prompt id

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda ids: decode_text(tokenizer, ids)

    def _wanted(self, prompt_id: str) -> bool:
        if prompt_id in self.snapshots:
            raise ValueError(f"pattern probe: prompt id {prompt_id!r} was fed twice")
        if self.params.prompt_ids:
            return prompt_id in self.params.prompt_ids
        return len(self.snapshots) < self.params.n_prompts

    def start_batch(self, batch: Batch) -> None:
        self._rows = {}
        for row, prompt_id in enumerate(batch.prompt_ids):
            if self._wanted(prompt_id):
                length = int(batch.lengths[row])
                self.snapshots[prompt_id] = _Snapshot(
                    ids=batch.tokens[row, :length].tolist(),
                    starts=block_starts(length, self.params.max_blocks),
                    mass={},
                )
                self._rows[row] = prompt_id

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        # Pooling is a sum over queries, so query chunks add up; the mean is taken in rows().
        for row, prompt_id in self._rows.items():
            snapshot = self.snapshots[prompt_id]
            length = len(snapshot.ids)
            n_queries = max(0, min(rows.shape[2], length - q_start))
            if n_queries == 0:
                continue
            chunk = rows[row, :, :n_queries, : max(0, length - k_start)].float()
            membership = block_membership(length, snapshot.starts).to(chunk.device)
            queries = membership[q_start : q_start + n_queries]
            keys = membership[k_start : k_start + chunk.shape[-1]]  # the band the rows cover
            mass = torch.einsum("qb,hqk,kc->hbc", queries, chunk, keys).cpu()
            snapshot.mass[layer] = snapshot.mass.get(layer, 0) + mass

    def end_batch(self, batch: Batch) -> None:
        self._rows = {}

    def take(self) -> dict[str, Any]:
        state = super().take()
        state["snapshots"] = {key: vars(snap) for key, snap in state["snapshots"].items()}
        return state

    def combine(self, earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
        """The first `n_prompts` fed (unless named): a batch after the first few took its own
        first ones, not knowing how many came before it."""
        combined = super().combine(earlier, later)
        if not self.params.prompt_ids:
            kept = list(combined["snapshots"].items())[: self.params.n_prompts]
            combined["snapshots"] = dict(kept)
        return combined

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.snapshots = {key: _Snapshot(**fields) for key, fields in state["snapshots"].items()}

    def rows(self) -> list[dict[str, Any]]:
        missing = sorted(set(self.params.prompt_ids) - set(self.snapshots))
        if missing:
            raise ConfigError(
                f"pattern probe: prompt ids {missing} were never fed "
                f"(fed: {sorted(self.snapshots) or 'none of those asked for'})"
            )
        rows: list[dict[str, Any]] = []
        for prompt_id, snapshot in self.snapshots.items():
            n_blocks = len(snapshot.starts)
            queries = block_membership(len(snapshot.ids), snapshot.starts).sum(0)
            for layer, mass in sorted(snapshot.mass.items()):
                pooled = mass / queries[None, :, None]
                values = pooled.tolist()
                for head in range(pooled.shape[0]):
                    for qb in range(n_blocks):
                        rows.extend(
                            {
                                "metric": "attention",
                                "layer": layer,
                                "head": head,
                                "prompt": prompt_id,
                                "position": qb,
                                "key_position": kb,
                                "value": values[head][qb][kb],
                            }
                            for kb in range(qb + 1)
                        )
        return rows

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stored prompts' tokens and block starts (side table "pattern_prompts")."""
        records = [
            {
                "prompt": prompt_id,
                "ids": list(snapshot.ids),
                "text": [self.decode([t]) for t in snapshot.ids] if self.decode else None,
                "block_starts": list(snapshot.starts),
            }
            for prompt_id, snapshot in self.snapshots.items()
        ]
        table = pd.DataFrame(records, columns=["prompt", "ids", "text", "block_starts"])
        return {schema.PATTERN_PROMPTS_TABLE: table}
