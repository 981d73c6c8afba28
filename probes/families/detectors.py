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
divide only when the batch ends. P is sparse, so a chunk never builds it densely: the
denominator is one pass of row sums less the excluded entries, and each numerator a gather of
the few entries P selects (the (q, q−1) diagonal, or the pairs of equal tokens).
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

# Entries of a chunk's rows [batch, head, q_chunk, band] as index tensors (batch, chunk row,
# band column); `match_pairs` gives a key position in the last place instead.
Pairs = tuple[Int[torch.Tensor, " pair"], Int[torch.Tensor, " pair"], Int[torch.Tensor, " pair"]]


def real_queries(
    lengths: Int[torch.Tensor, " batch"], q_start: int, n_rows: int
) -> Bool[torch.Tensor, "batch q_chunk"]:
    """Which queries q_start…q_start + n_rows − 1 are real tokens (not right padding)."""
    query = torch.arange(q_start, q_start + n_rows, device=lengths.device)
    return query[None, :] < lengths[:, None]


def kept_sums(
    rows: Float[torch.Tensor, "batch head q_chunk band"],
    lengths: Int[torch.Tensor, " batch"],
    q_start: int,
    k_start: int,
    first_key: int,
) -> Float[torch.Tensor, "batch head"]:
    """Σ of the rows over real queries and the real keys first_key… of the band (float64):
    the one pass over the band; right padding only slices each sequence's keys shorter."""
    n_rows, n_keys = rows.shape[-2:]
    first = first_key - k_start
    key_stops = (lengths - k_start).clamp(0, n_keys).tolist()
    if all(stop == n_keys for stop in key_stops):
        per_query = rows[..., first:].sum(-1, dtype=torch.float32)
    else:
        per_query = torch.stack(
            [
                rows[b, :, :, first:stop].sum(-1, dtype=torch.float32)
                for b, stop in enumerate(key_stops)
            ]
        )
    real = real_queries(lengths, q_start, n_rows)[:, None]
    return torch.where(real, per_query, 0).double().sum(-1)


def pair_sums(
    rows: Float[torch.Tensor, "batch head q_chunk band"], pairs: Pairs
) -> Float[torch.Tensor, "batch head"]:
    """Σ of the entries rows[b, :, i, j] over the (b, i, j) pairs, per sequence and head."""
    batch, row, column = pairs
    values = rows[batch, :, row, column].double()  # [pair, head]
    return values.new_zeros(rows.shape[0], rows.shape[1]).index_add_(0, batch, values)


def offset_pairs(
    lengths: Int[torch.Tensor, " batch"],
    q_start: int,
    n_rows: int,
    k_start: int,
    n_keys: int,
    offset: int,
    first_key: int,
) -> Pairs:
    """The entries (q, q + offset) of the chunk's real queries q whose key lies in the band and
    is at least first_key: offset −1 is the previous token, 0 the current one."""
    key = torch.arange(q_start, q_start + n_rows, device=lengths.device) + offset
    in_band = (key >= first_key) & (key < k_start + n_keys)
    batch, row = (real_queries(lengths, q_start, n_rows) & in_band).nonzero(as_tuple=True)
    return batch, row, key[row] - k_start


def match_pairs(
    tokens: Int[torch.Tensor, "batch pos"],
    lengths: Int[torch.Tensor, " batch"],
    q_start: int,
    n_rows: int,
    k_start: int,
    n_keys: int,
) -> Pairs:
    """(batch, chunk row, key position m) of every earlier key m < q with tokens[m] == tokens[q],
    for the chunk's real queries q, over the keys that the duplicate-token (m in the band) or
    the induction pattern (m + 1 in the band) reaches; m < q < length makes m and m + 1 real."""
    first, last = max(k_start - 1, 0), min(k_start + n_keys, q_start + n_rows - 1)
    same = tokens[:, q_start : q_start + n_rows, None] == tokens[:, None, first:last]
    batch, row, column = same.nonzero(as_tuple=True)  # one byte per pair: cheap next to rows
    key = column + first
    query = row + q_start
    earlier = (key < query) & (query < lengths[batch])
    return batch[earlier], row[earlier], key[earlier]


def chunk_sums(
    rows: Float[torch.Tensor, "batch head q_chunk band"],
    batch: Batch,
    q_start: int,
    k_start: int,
    exclude_bos: bool,
    exclude_current_token: bool,
) -> tuple[Float[torch.Tensor, "detector batch head"], Float[torch.Tensor, "batch head"]]:
    """Σ A'·P per detector and Σ A' (float64) over the rows of queries q_start… over keys
    k_start…, padding excluded."""
    n_rows, n_keys = rows.shape[-2:]
    lengths = batch.lengths
    first_key = max(k_start, int(exclude_bos))  # the first key A' keeps
    kept = kept_sums(rows, lengths, q_start, k_start, first_key)
    if exclude_current_token:
        kept -= pair_sums(
            rows, offset_pairs(lengths, q_start, n_rows, k_start, n_keys, 0, first_key)
        )
    previous = offset_pairs(lengths, q_start, n_rows, k_start, n_keys, -1, first_key)
    b, row, key = match_pairs(batch.tokens, lengths, q_start, n_rows, k_start, n_keys)
    duplicate = key >= first_key  # match_pairs keeps m below the band's end
    induced = key + 1  # the key after the earlier occurrence: never BOS, at most q
    induction = (induced >= k_start) & (induced < k_start + n_keys)
    if exclude_current_token:
        induction &= induced != row + q_start
    hits = [
        pair_sums(rows, previous),
        pair_sums(rows, (b[duplicate], row[duplicate], key[duplicate] - k_start)),
        pair_sums(rows, (b[induction], row[induction], induced[induction] - k_start)),
    ]
    return torch.stack(hits), kept


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
        hits, kept = chunk_sums(
            rows, batch, q_start, k_start, p.exclude_bos, p.exclude_current_token
        )
        self._batch_state(self._hits)[layer] += hits.cpu()
        self._batch_state(self._kept)[layer, 0] += kept.cpu()

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
