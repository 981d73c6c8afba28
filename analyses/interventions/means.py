"""Mean head outputs over a reference set of prompts, the values mean ablation substitutes.

`HeadMeans` accumulates them from hooks on any forward pass, so a sweep collects them during the
clean pass it runs anyway; `head_means` runs the passes itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float

from probes import bridge
from probes.core import hook_names as hook_names
from probes.core.types import Batch, Hook
from probes.models import LoadedModel, ModelInfo


class HeadMeans:
    """Each head's output (hook_z) summed over the real (non-padding) tokens of the batches
    whose forward passes ran with `hooks(batch)`."""

    def __init__(self, info: ModelInfo) -> None:
        self.n_layers = info.n_layers
        self.total = torch.zeros(info.n_layers, info.n_heads, info.d_head, dtype=torch.float64)
        self.n_tokens = 0

    def hooks(self, batch: Batch) -> list[Hook]:
        """Hooks for one forward pass over `batch`; its real tokens count from now on."""
        real = batch.query_mask  # [batch, pos]
        self.n_tokens += int(batch.lengths.sum())

        def add(z: torch.Tensor, hook: Any) -> None:
            layer = hook_names.layer_of(hook.name)
            self.total[layer] += torch.einsum("bphd,bp->hd", z.double(), real.double()).cpu()

        return [(hook_names.attn(layer, "z"), add) for layer in range(self.n_layers)]

    def means(self) -> Float[torch.Tensor, "layer head d_head"]:
        """The mean output per head so far."""
        if self.n_tokens == 0:
            raise ValueError("head means need at least one token of reference text")
        return (self.total / self.n_tokens).to(torch.float32)


def head_means(
    model: LoadedModel, batches: Iterable[Batch]
) -> Float[torch.Tensor, "layer head d_head"]:
    """Each head's output (hook_z) averaged over every real (non-padding) token of `batches`."""
    means = HeadMeans(model.info)
    for batch in batches:
        bridge.forward(
            model,
            batch.tokens,
            means.hooks(batch),
            attention_mask=batch.attention_mask,
            return_type=None,
        )
    return means.means()
