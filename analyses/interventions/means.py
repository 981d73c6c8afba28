"""Mean head outputs over a reference set of prompts, the values mean ablation substitutes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float

from probes import bridge
from probes.core import hook_names as hook_names
from probes.core.types import Batch
from probes.models import LoadedModel


def head_means(
    model: LoadedModel, batches: Iterable[Batch]
) -> Float[torch.Tensor, "layer head d_head"]:
    """Each head's output (hook_z) averaged over every real (non-padding) token of `batches`."""
    info = model.info
    total = torch.zeros(info.n_layers, info.n_heads, info.d_head, dtype=torch.float64)
    n_tokens = 0
    for batch in batches:
        real = batch.query_mask  # [batch, pos]

        def add(z: torch.Tensor, hook: Any, real: torch.Tensor = real) -> None:
            layer = hook_names.layer_of(hook.name)
            total[layer] += torch.einsum("bphd,bp->hd", z.double(), real.double()).cpu()

        hooks = [(hook_names.attn(layer, "z"), add) for layer in range(info.n_layers)]
        bridge.forward(
            model, batch.tokens, hooks, attention_mask=batch.attention_mask, return_type=None
        )
        n_tokens += int(batch.lengths.sum())
    if n_tokens == 0:
        raise ValueError("head_means needs at least one token of reference text")
    return (total / n_tokens).to(torch.float32)
