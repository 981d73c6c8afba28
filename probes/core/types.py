"""Shared value types: model shape, hook pairs, padded batches, tokenized prompts, probe
parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

Hook = tuple[str, Callable[..., Any]]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids of several prompts; `lengths` holds each prompt's true length."""

    tokens: torch.Tensor  # [batch, pos]
    lengths: torch.Tensor  # [batch]
    prompt_ids: tuple[str, ...]

    @property
    def attention_mask(self) -> torch.Tensor:
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return (positions[None, :] < self.lengths[:, None]).long()

    @property
    def query_mask(self) -> torch.Tensor:
        """[batch, pos] float mask of real (non-padding) positions."""
        return self.attention_mask.to(torch.float32)


@dataclass(frozen=True)
class ProbeParams:
    """Base for a probe's frozen parameters; they are recorded in the run manifest."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenizedPrompt:
    id: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    bos_token_id: int | None

    def kv_head(self, head: int) -> int:
        """The key/value head a query head reads under grouped-query attention."""
        return head // (self.n_heads // self.n_kv_heads)
