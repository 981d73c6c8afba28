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
The probe therefore keeps only per-head, per-token series (WAAD_h(t), FAI_h(s): 2·T numbers per
head and prompt, never T²), and `rows()` splits the heads and averages the series. This is exact
and costs one pass; its memory is n_prompts × n_layers × n_heads × T × 8 bytes (9 MB for SmolLM2
on 16 prompts × 256 tokens). A two-pass scheme would hold nothing but double the forward cost.
Pattern rows may arrive in query chunks (the fast path): d and WAAD_h(t) are per query; FAI_h(s)
sums the attention key s receives from the queries of its window as their rows arrive, and
divides by the window size when the batch ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from probes.core.probe import StreamingProbe, totals_of
from probes.core.reductions import attention_distance
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams
from probes.models import LoadedModel, decode_text

LOCALITY = ("local", "middle", "global")


def scored_positions(
    lengths: Int[torch.Tensor, " batch"], n_positions: int, first: int
) -> Bool[torch.Tensor, "batch pos"]:
    """R: real positions from `first` on (the paper scores response tokens; here `first`)."""
    positions = torch.arange(n_positions, device=lengths.device)
    return (positions[None, :] >= first) & (positions[None, :] < lengths[:, None])


def windowed_distance(
    rows: Float[torch.Tensor, "batch head q_chunk k_pos"],
    window: int,
    q_start: int = 0,
    k_start: int = 0,
) -> Float[torch.Tensor, "batch head q_chunk"]:
    """Σ_s A(t,s)·min(t − s, W) per query t (WAAD of one head; keys past t count 0), for the
    rows of queries q_start, q_start+1, … over keys k_start, k_start+1, … (default: the whole
    pattern). As W·Σ_s A(t,s) less a correction on the keys t − W < s only, so that beyond
    one sum over the rows it reads a band of W keys by the diagonal, not every key."""
    n_rows, n = rows.shape[-2:]
    first = max(k_start, min(q_start - window + 1, k_start + n))  # keys before: t − s ≥ W
    query = torch.arange(q_start, q_start + n_rows, device=rows.device)
    key = torch.arange(first, k_start + n, device=rows.device)
    lag = (query[:, None] - key[None, :]).clamp(min=0)
    correction = (window - lag).clamp(min=0).to(rows.dtype)  # W − min(t − s, W); W past t
    near = torch.einsum("bhqk,qk->bhq", rows[..., first - k_start :], correction)
    return window * rows.sum(-1) - near


def influence_window(
    scored: Bool[torch.Tensor, "batch pos"],
    low: int,
    high: int,
    q_start: int = 0,
    q_stop: int | None = None,
    k_start: int = 0,
    k_stop: int | None = None,
) -> Bool[torch.Tensor, "batch q_chunk k_pos"]:
    """[b, t, s]: query t counts towards FAI_s (t ∈ R and s + low ≤ t ≤ s + high), for the
    queries t in q_start:q_stop and the keys s in k_start:k_stop (default: all)."""
    n = scored.shape[1]
    q_stop = n if q_stop is None else q_stop
    k_stop = n if k_stop is None else k_stop
    query = torch.arange(q_start, q_stop, device=scored.device)
    lag = query[:, None] - torch.arange(k_start, k_stop, device=scored.device)[None, :]  # t − s
    return scored[:, q_start:q_stop, None] & ((lag >= low) & (lag <= high))[None]


def influence_keys(
    q_start: int, q_stop: int, low: int, high: int, k_start: int, k_stop: int
) -> tuple[int, int]:
    """Keys [first, stop) of k_start:k_stop whose FAI window holds a query of q_start:q_stop:
    s ∈ [t − high, t − low], a band of q_stop − q_start + high − low keys (empty: first ≥ stop)."""
    return max(k_start, q_start - high), min(k_stop, q_stop - low)


def window_sizes(
    scored: Bool[torch.Tensor, "batch pos"], low: int, high: int
) -> Int[torch.Tensor, "batch k_pos"]:
    """How many queries count towards FAI_s, Σ_t influence_window[b, t, s], without the T×T
    window: the scored positions in [s + low, s + high], from a running count."""
    n = scored.shape[1]
    before = torch.nn.functional.pad(scored.long().cumsum(1), (1, 0))  # scored positions < j
    positions = torch.arange(n, device=scored.device)
    stop = (positions + high + 1).clamp(max=n)
    start = (positions + low).clamp(max=n)
    return before[:, stop] - before[:, start]


def received_in_window(
    rows: Float[torch.Tensor, "batch head q_chunk k_pos"],
    window: Bool[torch.Tensor, "batch q_chunk k_pos"],
) -> Float[torch.Tensor, "batch head k_pos"]:
    """Attention each key s receives from the queries of these rows that are in its window."""
    return (rows * window[:, None].to(rows.dtype)).sum(2)  # an einsum here is 20× slower


def influence_from_received(
    received: Float[torch.Tensor, "... batch head k_pos"], counts: Int[torch.Tensor, "batch k_pos"]
) -> Float[torch.Tensor, "... batch head k_pos"]:
    """FAI_s from the attention key s received from its window: divide by the window size;
    NaN where the window is empty."""
    fai = received / counts[:, None].clamp(min=1).to(received.dtype)
    return fai.masked_fill(counts[:, None] == 0, float("nan"))


def future_influence(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    window: Bool[torch.Tensor, "batch q_pos k_pos"],
) -> tuple[Float[torch.Tensor, "batch head k_pos"], Int[torch.Tensor, "batch k_pos"]]:
    """FAI_s of one head (mean attention key s receives from its window) and the window sizes;
    FAI is NaN where the window is empty."""
    counts = window.sum(1)
    return influence_from_received(received_in_window(pattern, window), counts), counts


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


@dataclass(frozen=True)
class FutureAttentionParams(ProbeParams):
    """Parameters of the future-attention probe: the shares of local and global heads, WAAD's
    window W, FAI's horizon [H_lo, H_hi] and the first position scored (the paper's defaults)."""

    local_fraction: float = 0.3  # bottom 30 % of heads by mean distance are local
    global_fraction: float = 0.3  # top 30 % are global
    window: int = 10  # W, WAAD's clipping window
    horizon_low: int = 10  # H_lo: FAI_s averages queries t in [s + H_lo, s + H_hi]
    horizon_high: int = 50  # H_hi
    first_position: int = 1  # R = positions ≥ this (position 0 can only see itself)

    def check(self) -> None:
        self.require(0 < self.local_fraction < 1, "local_fraction", "in (0, 1)")
        self.require(0 < self.global_fraction < 1, "global_fraction", "in (0, 1)")
        self.require(
            self.local_fraction + self.global_fraction <= 1, "global_fraction", "≤ 1 − local"
        )
        self.require(self.window >= 1, "window", "at least 1")
        self.require(self.horizon_low >= 0, "horizon_low", "at least 0")
        self.require(self.horizon_high >= self.horizon_low, "horizon_high", "≥ horizon_low")
        self.require(self.first_position >= 0, "first_position", "at least 0")


@dataclass
class _Series:
    """One prompt's per-head series, filled layer by layer."""

    tokens: list[int]
    scored: torch.Tensor  # [pos] bool: in R
    waad: torch.Tensor  # [layer, head, pos]
    fai: torch.Tensor  # [layer, head, pos], NaN where the window is empty


@register_probe
class FutureAttentionProbe(StreamingProbe[FutureAttentionParams]):
    """Rows: per head "mean_attention_distance" (d(l,h)) and "locality" (condition local /
    middle / global; value = how typical of its class the head is, from its rank r ∈ [0, 1] by d:
    1 − r for local, r for global, 1 − 2|r − ½| for middle, so 1 = the most local / the most
    global / the most central head and top-k listings show the clearest members);
    per prompt and token "waad" and "fai" (no layer/head; prompt, position = token index,
    token = its text)."""

    name = "future_attention"
    Params = FutureAttentionParams
    description = (
        "local/global heads by attention distance; per-token WAAD and FAI (preplan/anchor)"
    )
    totals = totals_of(distance_sum="sum", n_scored="sum", series="dict")

    def __init__(self, info: ModelInfo, params: FutureAttentionParams | None = None) -> None:
        super().__init__(info, params)
        self.distance_sum = torch.zeros(info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_scored = 0
        self.series: dict[str, _Series] = {}
        self.decode: Callable[[int], str] = str  # token text once bound to a model
        self._scored: torch.Tensor | None = None  # [batch, pos] bool, R of this batch
        self._received: torch.Tensor | None = None  # [layer, batch, head, k_pos], this batch

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda token: decode_text(tokenizer, [token])

    def start_batch(self, batch: Batch) -> None:
        p = self.params
        self._scored = scored_positions(batch.lengths, batch.tokens.shape[1], p.first_position)
        shape = (self.info.n_layers, len(batch.lengths), self.info.n_heads, batch.tokens.shape[1])
        self._received = torch.zeros(shape, dtype=torch.float32, device=batch.tokens.device)
        lengths = batch.lengths.tolist()
        for index, prompt_id in enumerate(batch.prompt_ids):
            if prompt_id in self.series:
                raise ValueError(f"probe {self.name!r}: prompt id {prompt_id!r} seen twice")
            length = lengths[index]
            self.series[prompt_id] = _Series(
                tokens=batch.tokens[index, :length].tolist(),
                waad=torch.zeros(self.info.n_layers, self.info.n_heads, length),
                fai=torch.zeros(self.info.n_layers, self.info.n_heads, length),
                scored=self._scored[index, :length].cpu(),
            )

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        p = self.params
        rows = rows.float()
        q_stop = q_start + rows.shape[2]
        all_scored, received = self._batch_state(self._scored), self._batch_state(self._received)
        scored = all_scored[:, q_start:q_stop].float()
        distance = attention_distance(rows, q_start, k_start)
        self.distance_sum[layer] += torch.einsum("bhq,bq->h", distance, scored).double().cpu()
        # The queries of these rows count towards FAI_s of a band of keys s only.
        first, stop = influence_keys(
            q_start, q_stop, p.horizon_low, p.horizon_high, k_start, k_start + rows.shape[-1]
        )
        if first < stop:
            window = influence_window(
                all_scored, p.horizon_low, p.horizon_high, q_start, q_stop, first, stop
            )
            band = rows[..., first - k_start : stop - k_start]
            received[layer][..., first:stop] += received_in_window(band, window)
        waad = windowed_distance(rows, p.window, q_start, k_start).cpu()
        for index, prompt_id in enumerate(batch.prompt_ids):
            series = self.series[prompt_id]
            stop = min(q_stop, len(series.tokens))  # rows past the prompt's end are padding
            if stop > q_start:
                series.waad[layer, :, q_start:stop] = waad[index, :, : stop - q_start]

    def end_batch(self, batch: Batch) -> None:
        p = self.params
        scored, received = self._batch_state(self._scored), self._batch_state(self._received)
        counts = window_sizes(scored, p.horizon_low, p.horizon_high)
        fai = influence_from_received(received, counts).cpu()  # [layer, batch, head, pos]
        for index, prompt_id in enumerate(batch.prompt_ids):
            series = self.series[prompt_id]
            series.fai[:] = fai[:, index, :, : len(series.tokens)]
        self.n_scored += int(scored.sum())
        self._scored = self._received = None

    def take(self) -> dict[str, Any]:
        state = super().take()  # the series as plain dicts, so that a state stores as tensors
        state["series"] = {key: vars(series) for key, series in state["series"].items()}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.series = {key: _Series(**fields) for key, fields in state["series"].items()}

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
                r = rank[layer, head].item()
                if local[layer, head]:
                    locality, strength = "local", 1 - r
                elif global_[layer, head]:
                    locality, strength = "global", r
                else:
                    locality, strength = "middle", 1 - 2 * abs(r - 0.5)
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
                        "value": strength,
                    }
                )
        for prompt_id, series in self.series.items():
            waad = series.waad[local].mean(0)  # [pos]: WAAD of Ā_loc
            fai = series.fai[global_].mean(0)  # [pos]: FAI of Ā_glob
            for position, token in enumerate(series.tokens):
                text = self.decode(token)
                cell = {"prompt": prompt_id, "position": position, "token": text}
                if series.scored[position]:
                    rows.append({**cell, "metric": "waad", "value": waad[position].item()})
                if not torch.isnan(fai[position]):
                    rows.append({**cell, "metric": "fai", "value": fai[position].item()})
        return rows
