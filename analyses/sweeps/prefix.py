"""Reuse the clean forward pass up to the first intervened layer.

An intervention at layer L cannot change anything before L, so a sweep runs the clean prompt
once, keeps the residual stream entering each layer, and restarts every intervened pass at L.

TransformerBridge's `start_at_layer` swaps the given residual in at block L but still runs
blocks 0..L-1 on it first (TransformerLens 4.3, transformer_bridge.py `_setup_start_at_layer`),
so on its own it saves nothing. `resume` additionally turns blocks 0..L-1 into pass-throughs
for the duration of the call. The HF decoder loop, its masks and rotary embeddings run
unchanged, so the result is the full forward's; `resume_is_exact` checks that on a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float

from probes.bridge import forward, patterns_released_after_each_layer, skipping_blocks
from probes.core import hook_names as hook_names
from probes.core.types import Batch, Hook
from probes.models import LoadedModel


def clean_residuals(
    model: LoadedModel, batch: Batch, layers: Sequence[int], extra_hooks: Sequence[Hook] = ()
) -> tuple[Float[torch.Tensor, "batch pos vocab"], dict[int, torch.Tensor]]:
    """One clean forward: its logits and the residual stream entering each of `layers`."""
    residuals: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(resid: torch.Tensor, hook: Any) -> None:
            residuals[layer] = resid.detach().clone()

        return hook

    fwd_hooks = [(hook_names.block(layer, "resid_pre"), keep(layer)) for layer in layers]
    bridge = model.bridge
    with (
        torch.inference_mode(),
        bridge.hooks(fwd_hooks=[*fwd_hooks, *extra_hooks]),
        patterns_released_after_each_layer(bridge),
    ):
        logits = bridge(batch.tokens, attention_mask=batch.attention_mask)
    return logits, residuals


def resume(
    model: LoadedModel,
    residual: Float[torch.Tensor, "batch pos d_model"],
    layer: int,
    attention_mask: torch.Tensor,
    fwd_hooks: Sequence[Hook] = (),
) -> Float[torch.Tensor, "batch pos vocab"]:
    """Logits of the forward pass that enters block `layer` with `residual`; blocks before it
    are skipped. Hooks on those earlier blocks do not fire."""
    bridge = model.bridge
    with (
        torch.inference_mode(),
        skipping_blocks(bridge, layer),
        bridge.hooks(fwd_hooks=list(fwd_hooks)),
        patterns_released_after_each_layer(bridge),
    ):
        return bridge(residual, start_at_layer=layer, attention_mask=attention_mask)


def resume_is_exact(
    model: LoadedModel,
    batch: Batch,
    layer: int | None = None,
    *,
    residual: torch.Tensor | None = None,
    fwd_hooks: Sequence[Hook] = (),
    atol: float = 1e-5,
) -> bool:
    """Whether resuming at `layer` (default: the middle one) reproduces the full forward's
    logits on `batch`, at every position (padding included), within `atol`.

    `residual` is the stream entering `layer` (default: from a clean pass run here; a sweep
    passes the one its clean pass kept). `fwd_hooks` act on both passes; hooks before `layer`
    fire only in the full one, so give hooks that keep the clean logits (e.g. the positions a
    task reads).
    """
    layer = model.info.n_layers // 2 if layer is None else layer
    if residual is None:
        residual = clean_residuals(model, batch, [layer])[1][layer]
    full = forward(model, batch.tokens, fwd_hooks, attention_mask=batch.attention_mask)
    resumed = resume(model, residual, layer, batch.attention_mask, fwd_hooks)
    return bool(torch.allclose(full, resumed, atol=atol, rtol=0))
