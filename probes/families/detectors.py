"""Classic head detectors: previous-token, duplicate-token and induction scores, attention
entropy and mean attention distance.

The three scores follow TransformerLens' `head_detector` (error_measure="mul"): for one sequence
and head, score = Σ_{i,j} A'[i,j]·P[i,j] / Σ_{i,j} A'[i,j], a ratio over the whole matrix, where
P is the 0/1 detection pattern and A' is A with column 0 zeroed if `exclude_bos` and the diagonal
zeroed if `exclude_current_token`; a list of sequences gets the mean of their scores.
    previous token   P[i, i−1] = 1 (i ≥ 1)
    duplicate token  P[i, j] = 1 iff tokens[j] == tokens[i] and j < i
    induction        P[i, j] = 1 iff tokens[j−1] == tokens[i] and 1 ≤ j ≤ i
Without exclusions every row sums to 1, so the denominator is the sequence length and even a
perfect head scores below 1 (rows with no target count): a perfect previous-token head scores
(T−1)/T, a perfect induction head on [BOS, r, r] scores n/(2n+1) (1 with exclude_bos=True).

Streaming: each score's numerator and denominator, and every per-query statistic, are sums over
query rows, so both probes take pattern rows in query chunks of any size (the fast path) and
divide only when the batch ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams, TokenizedPrompt
from probes.inputs.prompts import PromptSuite
from probes.inputs.synthetic import repeated_random_prompts
from probes.models import LoadedModel

DETECTORS = ("previous_token", "duplicate_token", "induction")


def real_pairs(
    lengths: Int[torch.Tensor, " batch"],
    n_positions: int,
    q_start: int = 0,
    q_stop: int | None = None,
) -> Bool[torch.Tensor, "batch q_chunk k_pos"]:
    """Both query and key are real tokens (not right padding), for queries q_start:q_stop."""
    positions = torch.arange(n_positions, device=lengths.device)
    real = positions[None, :] < lengths[:, None]
    return real[:, q_start:q_stop, None] & real[:, None, :]


def detection_patterns(
    tokens: Int[torch.Tensor, "batch pos"],
    lengths: Int[torch.Tensor, " batch"],
    q_start: int = 0,
    q_stop: int | None = None,
) -> dict[str, Bool[torch.Tensor, "batch q_chunk k_pos"]]:
    """TransformerLens' three detection patterns for every sequence of a right-padded batch:
    the rows of queries q_start:q_stop (default: all), over every key."""
    n = tokens.shape[1]
    q_stop = n if q_stop is None else q_stop
    query = torch.arange(q_start, q_stop, device=tokens.device)[:, None]
    key = torch.arange(n, device=tokens.device)[None, :]
    real = real_pairs(lengths, n, q_start, q_stop)
    previous = (key == query - 1)[None].expand_as(real)
    same = tokens[:, q_start:q_stop, None] == tokens[:, None, :]  # [b, i, j]: t[i] == t[j]
    duplicate = same & (key < query)
    # induction[i, j] = duplicate-style match of tokens[i] with tokens[j−1], for 1 ≤ j ≤ i
    shifted = torch.zeros_like(same)
    shifted[:, :, 1:] = same[:, :, :-1]
    induction = shifted & (key <= query)
    return {
        "previous_token": previous & real,
        "duplicate_token": duplicate & real,
        "induction": induction & real,
    }


def kept_attention(
    rows: Float[torch.Tensor, "batch head q_chunk k_pos"],
    lengths: Int[torch.Tensor, " batch"],
    q_start: int = 0,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    k_start: int = 0,
) -> Float[torch.Tensor, "batch head q_chunk k_pos"]:
    """A' of TransformerLens' "mul" score for the rows of queries q_start… over keys k_start…:
    A with padding pairs zeroed, and column 0 (`exclude_bos`) and the diagonal
    (`exclude_current_token`)."""
    n_rows, n = rows.shape[-2:]
    width = max(q_start + n_rows, k_start + n)
    keep = real_pairs(lengths, width, q_start, q_start + n_rows)[..., k_start : k_start + n]
    if exclude_bos and k_start == 0:
        keep[:, :, 0] = False
    if exclude_current_token:
        query = torch.arange(q_start, q_start + n_rows, device=rows.device)[:, None]
        keep &= query != torch.arange(k_start, k_start + n, device=rows.device)[None, :]
    return rows * keep[:, None].to(rows.dtype)


def detector_scores(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    detection: Bool[torch.Tensor, "batch q_pos k_pos"],
    lengths: Int[torch.Tensor, " batch"],
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> Float[torch.Tensor, "batch head"]:
    """TransformerLens' "mul" similarity score per sequence and head, padding excluded.

    Numerator and denominator are sums over query rows, so a probe that sees the rows in chunks
    adds up `kept_attention` and its product with the detection rows, and divides at the end.
    """
    weights = kept_attention(pattern, lengths, 0, exclude_bos, exclude_current_token)
    hits = (weights * detection[:, None].to(pattern.dtype)).sum((-2, -1))
    return hits / weights.sum((-2, -1))


@dataclass(frozen=True)
class DetectorParams(ProbeParams):
    """Parameters of the detectors probe: how many repeated random-token sequences [BOS, r, r]
    it scores heads on, how long r is, its seed, and TransformerLens' exclusion flags."""

    n_sequences: int = 16  # repeated random-token sequences [BOS, r, r]
    half_len: int = 64  # length of r; --max-tokens does not apply to these sequences
    seed: int = 0  # draws r
    exclude_bos: bool = False  # TransformerLens' defaults
    exclude_current_token: bool = False

    def check(self) -> None:
        self.require(self.n_sequences >= 1, "n_sequences", "at least 1")
        self.require(self.half_len >= 2, "half_len", "at least 2")


@register_probe
class DetectorProbe(StreamingProbe[DetectorParams]):
    """Rows per head: "previous_token", "duplicate_token" and "induction", TransformerLens'
    `head_detector` "mul" scores on repeated random tokens (its own prompts, not the suite's)."""

    name = "detectors"
    Params = DetectorParams
    description = (
        "previous-token, duplicate-token, induction scores (TransformerLens head_detector) "
        "on repeated random tokens"
    )
    totals = totals_of(score_sum="sum", n_sequences="sum")

    def __init__(self, info: ModelInfo, params: DetectorParams | None = None) -> None:
        super().__init__(info, params)
        shape = (len(DETECTORS), info.n_layers, info.n_heads)
        self.score_sum = torch.zeros(shape, dtype=torch.float64)
        self.n_sequences = 0
        # This batch only: Σ A'·P per detector and Σ A', [layer, detector | 1, batch, head].
        self._hits: torch.Tensor | None = None
        self._kept: torch.Tensor | None = None

    def prompts(
        self, model: LoadedModel, suite: PromptSuite, max_tokens: int | None
    ) -> list[TokenizedPrompt]:
        p = self.params
        return repeated_random_prompts(model, p.n_sequences, p.half_len, p.seed, self.name)

    def start_batch(self, batch: Batch) -> None:
        shape = (self.info.n_layers, len(DETECTORS), len(batch.lengths), self.info.n_heads)
        self._hits = torch.zeros(shape, dtype=torch.float64)
        self._kept = torch.zeros(shape[0], 1, *shape[2:], dtype=torch.float64)

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        p = self.params
        q_stop = q_start + rows.shape[2]
        weights = kept_attention(
            rows.float(), batch.lengths, q_start, p.exclude_bos, p.exclude_current_token, k_start
        )
        kept, all_hits = self._batch_state(self._kept), self._batch_state(self._hits)
        kept[layer, 0] += weights.sum((-2, -1)).double().cpu()
        detection = detection_patterns(batch.tokens, batch.lengths, q_start, q_stop)
        band = slice(k_start, k_start + rows.shape[-1])  # the keys these rows cover
        for index, detector in enumerate(DETECTORS):
            pattern = detection[detector][:, None, :, band].to(weights.dtype)
            hits = (weights * pattern).sum((-2, -1))
            all_hits[layer, index] += hits.double().cpu()

    def end_batch(self, batch: Batch) -> None:
        hits, kept = self._batch_state(self._hits), self._batch_state(self._kept)
        scores = hits / kept  # [layer, detector, batch, head]
        self.score_sum += scores.sum(2).transpose(0, 1)
        self.n_sequences += len(batch.lengths)
        self._hits = self._kept = None

    def rows(self) -> list[dict[str, Any]]:
        if self.n_sequences == 0:
            return []
        mean = self.score_sum / self.n_sequences
        return [
            {
                "metric": detector,
                "layer": layer,
                "head": head,
                "value": mean[index, layer, head].item(),
            }
            for index, detector in enumerate(DETECTORS)
            for layer in range(self.info.n_layers)
            for head in range(self.info.n_heads)
        ]
