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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from probes import hooks
from probes.base import Batch, Hook, Probe, ProbeParams, register_probe
from probes.engine import TokenizedPrompt
from probes.models import LoadedModel
from probes.prompts import PromptSuite
from probes.synthetic import repeated_random_prompts

DETECTORS = ("previous_token", "duplicate_token", "induction")


def real_pairs(lengths: Int[torch.Tensor, " batch"], n_positions: int) -> torch.Tensor:
    """[batch, q_pos, k_pos] bool: both query and key are real tokens (not right padding)."""
    positions = torch.arange(n_positions, device=lengths.device)
    real = positions[None, :] < lengths[:, None]
    return real[:, :, None] & real[:, None, :]


def detection_patterns(
    tokens: Int[torch.Tensor, "batch pos"], lengths: Int[torch.Tensor, " batch"]
) -> dict[str, Bool[torch.Tensor, "batch q_pos k_pos"]]:
    """TransformerLens' three detection patterns for every sequence of a right-padded batch."""
    n = tokens.shape[1]
    query = torch.arange(n, device=tokens.device)[:, None]
    key = torch.arange(n, device=tokens.device)[None, :]
    real = real_pairs(lengths, n)
    previous = (key == query - 1)[None].expand_as(real)
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, i, j]: tokens[i] == tokens[j]
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


def detector_scores(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    detection: Bool[torch.Tensor, "batch q_pos k_pos"],
    lengths: Int[torch.Tensor, " batch"],
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> Float[torch.Tensor, "batch head"]:
    """TransformerLens' "mul" similarity score per sequence and head, padding excluded."""
    n = pattern.shape[-1]
    keep = real_pairs(lengths, n)
    if exclude_bos:
        keep[:, :, 0] = False
    if exclude_current_token:
        keep &= ~torch.eye(n, dtype=torch.bool, device=pattern.device)[None]
    weights = pattern * keep[:, None].to(pattern.dtype)
    hits = (weights * detection[:, None].to(pattern.dtype)).sum((-2, -1))
    return hits / weights.sum((-2, -1))


def attention_distance(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
) -> Float[torch.Tensor, "batch head q_pos"]:
    """How far each query looks back on average: Σ_k A[q, k]·(q − k)."""
    n = pattern.shape[-1]
    positions = torch.arange(n, device=pattern.device, dtype=pattern.dtype)
    distance = (positions[:, None] - positions[None, :]).clamp(min=0)
    return torch.einsum("bhqk,qk->bhq", pattern, distance)


def attention_entropy(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
) -> Float[torch.Tensor, "batch head q_pos"]:
    """Entropy of each query's attention distribution in nats (0·log 0 = 0)."""
    return -(pattern * pattern.clamp(min=torch.finfo(pattern.dtype).tiny).log()).sum(-1)


def scored_queries(lengths: Int[torch.Tensor, " batch"], n_positions: int) -> torch.Tensor:
    """[batch, q_pos] float mask of real queries after the first, which has only itself to see."""
    positions = torch.arange(n_positions, device=lengths.device)
    return ((positions[None, :] >= 1) & (positions[None, :] < lengths[:, None])).float()


@dataclass(frozen=True)
class DetectorParams(ProbeParams):
    n_sequences: int = 16  # repeated random-token sequences [BOS, r, r]
    half_len: int = 64  # length of r; --max-tokens does not apply to these sequences
    seed: int = 0  # draws r
    exclude_bos: bool = False  # TransformerLens' defaults
    exclude_current_token: bool = False


@register_probe
class DetectorProbe(Probe):
    name = "detectors"
    Params = DetectorParams
    description = (
        "previous-token, duplicate-token, induction scores (TransformerLens head_detector) "
        "on repeated random tokens"
    )

    def __init__(self, info, params: DetectorParams | None = None) -> None:
        super().__init__(info, params)
        shape = (len(DETECTORS), info.n_layers, info.n_heads)
        self.score_sum = torch.zeros(shape, dtype=torch.float64)
        self.n_sequences = 0

    def prompts(
        self, model: LoadedModel, suite: PromptSuite, max_tokens: int | None
    ) -> list[TokenizedPrompt]:
        p = self.params
        return repeated_random_prompts(model, p.n_sequences, p.half_len, p.seed, self.name)

    def hooks(self, batch: Batch) -> list[Hook]:
        patterns = detection_patterns(batch.tokens, batch.lengths)
        self.n_sequences += len(batch.lengths)

        def on_pattern(pattern: torch.Tensor, hook: Any) -> None:
            layer = hooks.layer_of(hook.name)
            for index, detector in enumerate(DETECTORS):
                scores = detector_scores(
                    pattern.float(),
                    patterns[detector],
                    batch.lengths,
                    self.params.exclude_bos,
                    self.params.exclude_current_token,
                )
                self.score_sum[index, layer] += scores.double().sum(0).cpu()

        return [(hooks.attn(layer, "pattern"), on_pattern) for layer in range(self.info.n_layers)]

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


@dataclass(frozen=True)
class AttentionStatsParams(ProbeParams):
    pass


@register_probe
class AttentionStatsProbe(Probe):
    """Per head, averaged over every real query after the first of every prompt:
    entropy (nats), entropy / log(q + 1) (1 = uniform over the visible keys), and the mean
    attention distance Σ_k A[q, k]·(q − k)."""

    name = "attention_stats"
    Params = AttentionStatsParams
    description = "attention entropy (raw, normalised) and mean attention distance per head"

    METRICS = ("entropy", "entropy_normalized", "mean_attention_distance")

    def __init__(self, info, params: AttentionStatsParams | None = None) -> None:
        super().__init__(info, params)
        self.sums = torch.zeros(len(self.METRICS), info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_queries = 0.0

    def hooks(self, batch: Batch) -> list[Hook]:
        n = batch.tokens.shape[1]
        queries = scored_queries(batch.lengths, n)
        self.n_queries += float(queries.sum())
        log_visible = torch.arange(1, n + 1, device=queries.device).float().log().clamp(min=1e-12)

        def on_pattern(pattern: torch.Tensor, hook: Any) -> None:
            layer = hooks.layer_of(hook.name)
            pattern = pattern.float()
            entropy = attention_entropy(pattern)
            per_query = (entropy, entropy / log_visible, attention_distance(pattern))
            for index, values in enumerate(per_query):
                self.sums[index, layer] += torch.einsum("bhq,bq->h", values, queries).double().cpu()

        return [(hooks.attn(layer, "pattern"), on_pattern) for layer in range(self.info.n_layers)]

    def rows(self) -> list[dict[str, Any]]:
        if self.n_queries == 0:
            return []
        mean = self.sums / self.n_queries
        return [
            {
                "metric": metric,
                "layer": layer,
                "head": head,
                "value": mean[index, layer, head].item(),
            }
            for index, metric in enumerate(self.METRICS)
            for layer in range(self.info.n_layers)
            for head in range(self.info.n_heads)
        ]
