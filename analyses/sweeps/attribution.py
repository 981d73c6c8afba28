"""Attribution patching: every head's ablation effect, estimated in one forward + one backward.

The change of a task objective M when head h's output z_h is replaced by z'_h is, to first
order, Σ_{batch,pos,d} ∂M/∂z_h · (z'_h − z_h) (Nanda's attribution patching; Syed et al. 2023).
z' is 0 for zero ablation, the reference mean for mean ablation, and for the uniform-attention
mask the running mean of the head's values over the visible keys — the exact output that mask
produces — so all three modes come from the same gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float

from analyses.sweeps.tasks import ForwardTask, TaskBatch, read_positions_hooks
from probes import bridge
from probes.core import hook_names as hook_names
from probes.models import LoadedModel


def uniform_outputs(
    v: Float[torch.Tensor, "batch pos kv_head d_head"], n_heads: int
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """What each query head outputs under uniform causal attention: the running mean of V."""
    group = n_heads // v.shape[2]
    counts = torch.arange(1, v.shape[1] + 1, dtype=v.dtype, device=v.device)
    running = v.cumsum(1) / counts[None, :, None, None]
    return running.repeat_interleave(group, dim=2)


def head_gradients(
    model: LoadedModel, task: ForwardTask, task_batch: TaskBatch, total_weight: float
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per layer: z, ∂(objective mean)/∂z and v on one batch ([batch, pos, head|kv_head, d])."""
    n_layers = model.info.n_layers
    zs: dict[int, torch.Tensor] = {}
    vs: dict[int, torch.Tensor] = {}

    def keep_z(z: torch.Tensor, hook: Any) -> torch.Tensor:
        zs[hook_names.layer_of(hook.name)] = z
        return z  # returned, so the tensor we differentiate by is the one used downstream

    def keep_v(v: torch.Tensor, hook: Any) -> None:
        vs[hook_names.layer_of(hook.name)] = v.detach()

    def track(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid.detach().requires_grad_(True)  # a graph even if the weights are frozen

    fwd_hooks = [
        (hook_names.block(0, "resid_pre"), track),
        *[(hook_names.attn(layer, "z"), keep_z) for layer in range(n_layers)],
        *[(hook_names.attn(layer, "v"), keep_v) for layer in range(n_layers)],
        *read_positions_hooks(task_batch.read_at, copies=1),
    ]
    batch = task_batch.batch
    with bridge.hooked(model, fwd_hooks, grad=True) as hooked_bridge:
        logits = hooked_bridge(batch.tokens, attention_mask=batch.attention_mask)
        objective = task.score(logits, task_batch)[task.objective] / total_weight
        layers = sorted(zs)
        grads = torch.autograd.grad(objective, [zs[layer] for layer in layers])
    grad_by_layer = dict(zip(layers, (g.detach() for g in grads), strict=True))
    return {k: z.detach() for k, z in zs.items()}, grad_by_layer, vs


def attribution_scores(
    model: LoadedModel,
    task: ForwardTask,
    task_batches: Sequence[TaskBatch],
    modes: Sequence[str],
    means: torch.Tensor | None = None,
) -> dict[str, Float[torch.Tensor, "layer head"]]:
    """Estimated change of the task's objective (its mean over all batches) per head and mode."""
    info = model.info
    total_weight = sum(task.weight(tb) for tb in task_batches)
    estimates = {
        mode: torch.zeros(info.n_layers, info.n_heads, dtype=torch.float64) for mode in modes
    }
    for task_batch in task_batches:
        zs, grads, vs = head_gradients(model, task, task_batch, total_weight)
        real = task_batch.batch.query_mask[:, :, None, None]
        for layer, z in zs.items():
            grad = grads[layer] * real
            for mode in modes:
                if mode == "zero":
                    patched = torch.zeros_like(z)
                elif mode == "mean":
                    if means is None:
                        raise ValueError("attribution for mode 'mean' needs `means`")
                    patched = means[layer].to(z)[None, None].expand_as(z)
                elif mode == "uniform":
                    patched = uniform_outputs(vs[layer], info.n_heads)
                else:
                    raise ValueError(f"attribution mode {mode!r} is not zero, mean or uniform")
                delta = (grad * (patched - z)).sum(dim=(0, 1, 3))
                estimates[mode][layer] += delta.double().cpu()
    return {mode: value.float() for mode, value in estimates.items()}


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation of two aligned series (average ranks for ties)."""
    joined = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(joined) < 2:
        raise ValueError("spearman needs at least two paired values")
    ranks = joined.rank()
    return float(ranks.iloc[:, 0].corr(ranks.iloc[:, 1]))
