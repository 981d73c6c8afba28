"""`attention_stats`: attention entropy (raw and normalised) and mean distance per head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from probes.core.probe import StreamingProbe, totals_of
from probes.core.reductions import attention_distance, attention_entropy, scored_queries
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams


@dataclass(frozen=True)
class AttentionStatsParams(ProbeParams):
    """The attention-statistics probe takes no parameters."""


@register_probe
class AttentionStatsProbe(StreamingProbe[AttentionStatsParams]):
    """Per head, averaged over every real query after the first of every prompt:
    entropy (nats), entropy / log(q + 1) (1 = uniform over the visible keys), and the mean
    attention distance Σ_k A[q, k]·(q − k)."""

    name = "attention_stats"
    Params = AttentionStatsParams
    description = "attention entropy (raw, normalised) and mean attention distance per head"

    METRICS = ("entropy", "entropy_normalized", "mean_attention_distance")
    totals = totals_of(sums="sum", n_queries="sum")
    reads = frozenset({"pattern", "row_entropy"})

    def __init__(self, info: ModelInfo, params: AttentionStatsParams | None = None) -> None:
        super().__init__(info, params)
        self.sums = torch.zeros(len(self.METRICS), info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_queries = 0.0
        self._queries: torch.Tensor | None = None  # [batch, q_pos], this batch only

    def start_batch(self, batch: Batch) -> None:
        self._queries = scored_queries(batch.lengths, batch.tokens.shape[1])

    def on_pattern(
        self,
        layer: int,
        rows: torch.Tensor,
        q_start: int,
        batch: Batch,
        k_start: int = 0,
        entropy: torch.Tensor | None = None,
    ) -> None:
        """`entropy`: the rows' entropy if the engine has it (the fast path computes it from the
        scores, `fast.pattern_rows_and_entropy`); else it is taken from the rows here."""
        rows = rows.float()
        q_stop = q_start + rows.shape[2]
        queries = self._batch_state(self._queries)[:, q_start:q_stop]
        log_visible = torch.arange(q_start + 1, q_stop + 1, device=rows.device).float().log()
        entropy = attention_entropy(rows) if entropy is None else entropy
        per_query = (
            entropy,
            entropy / log_visible.clamp(min=1e-12),
            attention_distance(rows, q_start, k_start),
        )
        for index, values in enumerate(per_query):
            self.sums[index, layer] += torch.einsum("bhq,bq->h", values, queries).double().cpu()

    def end_batch(self, batch: Batch) -> None:
        self.n_queries += float(self._batch_state(self._queries).sum())
        self._queries = None

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
