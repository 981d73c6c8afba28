"""Windowed average attention distance (WAAD) and future attention influence (FAI), after
"Attention Illuminates LLM Reasoning" (Li et al. 2025, arXiv 2510.13554, §4.1).

Heads are split by their mean backward distance over the scored positions R,
    d(l,h) = 1/|R| Σ_{t∈R} Σ_s A(t,s)·(t − s)                                     (Eq. 7)
into a local set (the lowest `local_fraction` of heads) and a global set (the highest
`global_fraction`); Ā_loc and Ā_glob are the mean attention maps of each set (Eq. 8). Then
    WAAD_t = Σ_s Ā_loc(t,s)·min(t − s, W)                                         (Def. 4.1)
    FAI_s  = mean over t ∈ R with s + H_lo ≤ t ≤ min(N−1, s + H_hi) of Ā_glob(t,s) (Def. 4.2)
The authors released no code; these are the paper's equations.

Streaming: the split needs d(l,h) over the whole suite before any Ā exists. Both metrics are
linear in A, so the mean over a head set of per-head series equals the series of the mean map.
Each hook therefore keeps only per-head, per-token series (WAAD_h(t), FAI_h(s): 2·T numbers per
head and prompt, never T²), and `rows()` splits the heads and averages the series. This is exact
and costs one pass; its memory is n_prompts × n_layers × n_heads × T × 8 bytes (9 MB for SmolLM2
on 16 prompts × 256 tokens). A two-pass scheme would hold nothing but double the forward cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from probes import hooks
from probes.base import Batch, Hook, Probe, ProbeParams, register_probe
from probes.detectors import attention_distance
from probes.models import LoadedModel

LOCALITY = ("local", "middle", "global")


def scored_positions(
    lengths: Int[torch.Tensor, " batch"], n_positions: int, first: int
) -> Bool[torch.Tensor, "batch pos"]:
    """R: real positions from `first` on (the paper scores response tokens; here `first`)."""
    positions = torch.arange(n_positions, device=lengths.device)
    return (positions[None, :] >= first) & (positions[None, :] < lengths[:, None])


def windowed_distance(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"], window: int
) -> Float[torch.Tensor, "batch head q_pos"]:
    """Σ_s A(t,s)·min(t − s, W) per query t (WAAD of one head)."""
    n = pattern.shape[-1]
    positions = torch.arange(n, device=pattern.device)
    clipped = (positions[:, None] - positions[None, :]).clamp(min=0, max=window).to(pattern.dtype)
    return torch.einsum("bhqk,qk->bhq", pattern, clipped)


def influence_window(
    scored: Bool[torch.Tensor, "batch pos"], low: int, high: int
) -> Bool[torch.Tensor, "batch q_pos k_pos"]:
    """[b, t, s]: query t counts towards FAI_s (t ∈ R and s + low ≤ t ≤ s + high)."""
    n = scored.shape[1]
    positions = torch.arange(n, device=scored.device)
    lag = positions[:, None] - positions[None, :]  # t − s
    return scored[:, :, None] & ((lag >= low) & (lag <= high))[None]


def future_influence(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    window: Bool[torch.Tensor, "batch q_pos k_pos"],
) -> tuple[Float[torch.Tensor, "batch head k_pos"], Int[torch.Tensor, "batch k_pos"]]:
    """FAI_s of one head (mean attention key s receives from its window) and the window sizes;
    FAI is NaN where the window is empty."""
    counts = window.sum(1)
    received = (pattern * window[:, None].to(pattern.dtype)).sum(2)  # an einsum here is 20× slower
    fai = received / counts[:, None].clamp(min=1).to(pattern.dtype)
    return fai.masked_fill(counts[:, None] == 0, float("nan")), counts


def split_heads(
    distance: Float[torch.Tensor, "layer head"], local_fraction: float, global_fraction: float
) -> tuple[Bool[torch.Tensor, "layer head"], Bool[torch.Tensor, "layer head"]]:
    """The `local_fraction` of heads with the smallest mean distance, and the `global_fraction`
    with the largest (ties broken by layer, then head)."""
    n = distance.numel()
    n_local = max(1, round(local_fraction * n))
    n_global = max(1, round(global_fraction * n))
    if n_local + n_global > n:
        raise ValueError(
            f"local_fraction={local_fraction} and global_fraction={global_fraction} give "
            f"{n_local} + {n_global} heads, more than the {n} heads there are"
        )
    order = torch.argsort(distance.flatten(), stable=True)
    local = torch.zeros(n, dtype=torch.bool)
    global_ = torch.zeros(n, dtype=torch.bool)
    local[order[:n_local]] = True
    global_[order[n - n_global :]] = True
    return local.view_as(distance), global_.view_as(distance)


def token_condition(prompt_id: str, token: str) -> str:
    """`condition` of a per-token row: which prompt and which token (JSON, any text works)."""
    return json.dumps({"prompt": prompt_id, "token": token}, sort_keys=True)


@dataclass(frozen=True)
class FutureAttentionParams(ProbeParams):
    local_fraction: float = 0.3  # bottom 30 % of heads by mean distance are local
    global_fraction: float = 0.3  # top 30 % are global
    window: int = 10  # W, WAAD's clipping window
    horizon_low: int = 10  # H_lo: FAI_s averages queries t in [s + H_lo, s + H_hi]
    horizon_high: int = 50  # H_hi
    first_position: int = 1  # R = positions ≥ this (position 0 can only see itself)

    def __post_init__(self) -> None:
        if not (0 < self.local_fraction < 1 and 0 < self.global_fraction < 1):
            raise ValueError("local_fraction and global_fraction must lie in (0, 1)")
        if not 0 <= self.horizon_low <= self.horizon_high or self.window < 1:
            raise ValueError("need window ≥ 1 and 0 ≤ horizon_low ≤ horizon_high")


@dataclass
class _Series:
    """One prompt's per-head series, filled layer by layer."""

    tokens: list[int]
    scored: torch.Tensor  # [pos] bool: in R
    waad: torch.Tensor  # [layer, head, pos]
    fai: torch.Tensor  # [layer, head, pos], NaN where the window is empty


@register_probe
class FutureAttentionProbe(Probe):
    """Rows: per head "mean_attention_distance" (d(l,h)) and "locality" (condition local /
    middle / global, value = the head's rank by d as a fraction: 0 most local, 1 most global);
    per prompt and token "waad" and "fai" (no layer/head; position = token index, condition =
    token_condition(prompt id, token text))."""

    name = "future_attention"
    Params = FutureAttentionParams
    description = (
        "local/global heads by attention distance; per-token WAAD and FAI (preplan/anchor)"
    )

    def __init__(self, info, params: FutureAttentionParams | None = None) -> None:
        super().__init__(info, params)
        self.distance_sum = torch.zeros(info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_scored = 0
        self.series: dict[str, _Series] = {}
        self.decode = str

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda token: tokenizer.decode([token])

    def hooks(self, batch: Batch) -> list[Hook]:
        p = self.params
        n = batch.tokens.shape[1]
        scored = scored_positions(batch.lengths, n, p.first_position)
        window = influence_window(scored, p.horizon_low, p.horizon_high)
        self.n_scored += int(scored.sum())
        shape = (self.info.n_layers, self.info.n_heads)
        lengths = batch.lengths.tolist()
        for index, prompt_id in enumerate(batch.prompt_ids):
            if prompt_id in self.series:
                raise ValueError(f"probe {self.name!r}: prompt id {prompt_id!r} seen twice")
            length = lengths[index]
            self.series[prompt_id] = _Series(
                tokens=batch.tokens[index, :length].tolist(),
                waad=torch.zeros(*shape, length),
                fai=torch.zeros(*shape, length),
                scored=scored[index, :length].cpu(),
            )

        def on_pattern(pattern: torch.Tensor, hook: Any) -> None:
            layer = hooks.layer_of(hook.name)
            pattern = pattern.float()
            distance = attention_distance(pattern)
            self.distance_sum[layer] += (
                torch.einsum("bhq,bq->h", distance, scored.float()).double().cpu()
            )
            waad = windowed_distance(pattern, p.window).cpu()
            fai, _ = future_influence(pattern, window)
            fai = fai.cpu()
            for index, prompt_id in enumerate(batch.prompt_ids):
                series = self.series[prompt_id]
                series.waad[layer] = waad[index, :, : lengths[index]]
                series.fai[layer] = fai[index, :, : lengths[index]]

        return [(hooks.attn(layer, "pattern"), on_pattern) for layer in range(self.info.n_layers)]

    def mean_distance(self) -> torch.Tensor:
        """d(l,h) over every scored position seen so far, [layer, head]."""
        return self.distance_sum / max(self.n_scored, 1)

    def rows(self) -> list[dict[str, Any]]:
        if self.n_scored == 0:
            return []
        distance = self.mean_distance()
        local, global_ = split_heads(
            distance, self.params.local_fraction, self.params.global_fraction
        )
        n = distance.numel()
        rank = torch.empty(n)
        rank[torch.argsort(distance.flatten(), stable=True)] = torch.arange(n, dtype=torch.float32)
        rank = (rank / max(n - 1, 1)).view_as(distance)
        rows: list[dict[str, Any]] = []
        for layer in range(self.info.n_layers):
            for head in range(self.info.n_heads):
                base = {"layer": layer, "head": head}
                locality = (
                    "local"
                    if local[layer, head]
                    else "global"
                    if global_[layer, head]
                    else "middle"
                )
                rows.append(
                    {
                        **base,
                        "metric": "mean_attention_distance",
                        "value": distance[layer, head].item(),
                    }
                )
                rows.append(
                    {
                        **base,
                        "metric": "locality",
                        "condition": locality,
                        "value": rank[layer, head].item(),
                    }
                )
        for prompt_id, series in self.series.items():
            waad = series.waad[local].mean(0)  # [pos]: WAAD of Ā_loc
            fai = series.fai[global_].mean(0)  # [pos]: FAI of Ā_glob
            for position, token in enumerate(series.tokens):
                condition = token_condition(prompt_id, self.decode(token))
                base = {"layer": None, "head": None, "position": position, "condition": condition}
                if series.scored[position]:
                    rows.append({**base, "metric": "waad", "value": waad[position].item()})
                if not torch.isnan(fai[position]):
                    rows.append({**base, "metric": "fai", "value": fai[position].item()})
        return rows
