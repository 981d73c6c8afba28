"""Pure tensor edits of head activations and attention patterns, the maths of the interventions.

Each function takes a tensor and returns a new one; none changes its input in place or touches a
model (`analyses.interventions.kinds` wraps them in value objects that emit hooks). Every edit of
a pattern keeps each row's sum (1 on real rows).

Shapes (batch first, every query head present under GQA):
  hook_z       [batch, pos, head, d_head]  head outputs — replace_heads, scale_heads
  hook_rot_q   [batch, pos, head, d_head]  post-RoPE queries — replace_heads (the authors' mask)
  hook_pattern [batch, head, q_pos, k_pos] post-softmax attention — soft_pag, redistribute
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int

from probes.families.sink import sink_alpha


def replace_heads(
    z: Float[torch.Tensor, "batch pos head d_head"],
    heads: Sequence[int],
    value: Float[torch.Tensor, "n_heads d_head"] | float,
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """`z` with the given heads' outputs replaced by `value` (0, or one vector per head)."""
    out = z.clone()
    index = list(heads)
    if isinstance(value, torch.Tensor):
        out[:, :, index] = value.to(z)[None, None]
    else:
        out[:, :, index] = value
    return out


def scale_heads(
    z: Float[torch.Tensor, "batch pos head d_head"], heads: Sequence[int], alpha: float
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """`z` with the given heads' outputs multiplied by `alpha` (VHR's reinforcement)."""
    factor = torch.ones(z.shape[2], dtype=z.dtype, device=z.device)
    factor[list(heads)] = alpha
    return z * factor[None, None, :, None]


def soft_pag(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"], u: float
) -> Float[torch.Tensor, "batch head q_pos k_pos"]:
    """SoftPAG: A' = (1 − u)·A + u·I, where I puts each query on its own key position."""
    q_len, k_len = pattern.shape[-2:]
    identity = identity_pattern(q_len, k_len, dtype=pattern.dtype, device=pattern.device)
    return (1 - u) * pattern + u * identity


def identity_pattern(
    q_len: int, k_len: int, *, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Float[torch.Tensor, "q_pos k_pos"]:
    """Each query on its own position; queries are the last q_len of k_len positions (KV cache)."""
    rows = torch.arange(q_len, device=device) + (k_len - q_len)
    eye = torch.zeros(q_len, k_len, dtype=dtype, device=device)
    eye[torch.arange(q_len, device=device), rows] = 1
    return eye


def redistribute(
    pattern: Float[torch.Tensor, "*rows q_pos k_pos"],
    sources: Bool[torch.Tensor, "*rows k_pos"],
    targets: Bool[torch.Tensor, "*rows k_pos"],
    keep: float,
    queries: Bool[torch.Tensor, " q_pos"] | None = None,
) -> Float[torch.Tensor, "*rows q_pos k_pos"]:
    """Keep `keep` of the attention on `sources`; give the rest to `targets` in proportion.

    Row i loses (1 − keep)·s_i, s_i = Σ_{k∈sources} A[i,k], and target j gains that times
    A[i,j] / Σ_{j'∈targets} A[i,j'] (ACT's and VAR's rule), so row sums are unchanged. A row
    whose targets hold no attention (e.g. targets it cannot see yet) has nowhere to put the
    mass and is left as it is, as are rows outside `queries`.
    """
    sources = sources[..., None, :]
    targets = targets[..., None, :] & ~sources
    source_mass = (pattern * sources).sum(-1, keepdim=True)
    target_mass = (pattern * targets).sum(-1, keepdim=True)
    movable = target_mass > 0
    if queries is not None:
        movable = movable & queries[:, None]
    gain = (1 - keep) * source_mass / torch.where(movable, target_mass, 1)
    factor = torch.where(sources, keep, torch.where(targets, 1 + gain, 1)).to(pattern.dtype)
    return torch.where(movable, pattern * factor, pattern)


def act_sinks(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    lengths: Int[torch.Tensor, " batch"] | None,
    threshold: float = 0.1,
    spare_first: bool = True,
) -> Bool[torch.Tensor, "batch head k_pos"]:
    """ACT's input-adaptive sinks per head: keys with α > threshold, minus the first one found.

    α is Gu et al.'s mean attention from the queries that see the key (GATECH-EIC/ACT,
    atten_process_eval); `indices[1:]` there spares the lowest detected position.
    """
    if lengths is None:
        lengths = torch.full((pattern.shape[0],), pattern.shape[-1], device=pattern.device)
    sinks = sink_alpha(pattern, lengths) > threshold  # NaN (padding keys) is never a sink
    if spare_first:
        first = sinks.int().argmax(-1, keepdim=True)
        found = sinks.any(-1, keepdim=True)
        spared = torch.zeros_like(sinks).scatter(-1, first, found)
        sinks = sinks & ~spared
    return sinks
