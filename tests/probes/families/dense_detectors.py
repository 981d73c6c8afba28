"""Test-only transcription of the detectors probe's former dense per-chunk formula: the three
c×T detection patterns and A' built as dense masks, multiplied into the rows and summed. The
probe's sparse gathers must equal it; TransformerLens checks it in test_detectors.py."""

from __future__ import annotations

import torch

from probes.core.types import Batch
from probes.families.detectors import DETECTORS


def real_pairs(lengths, n_positions, q_start=0, q_stop=None):
    """Both query and key are real tokens (not right padding), for queries q_start:q_stop."""
    positions = torch.arange(n_positions, device=lengths.device)
    real = positions[None, :] < lengths[:, None]
    return real[:, q_start:q_stop, None] & real[:, None, :]


def detection_patterns(tokens, lengths, q_start=0, q_stop=None):
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
    shifted = torch.zeros_like(same)
    shifted[:, :, 1:] = same[:, :, :-1]
    induction = shifted & (key <= query)
    return {
        "previous_token": previous & real,
        "duplicate_token": duplicate & real,
        "induction": induction & real,
    }


def kept_attention(
    rows, lengths, q_start=0, exclude_bos=False, exclude_current_token=False, k_start=0
):
    """A' for the rows of queries q_start… over keys k_start…: padding pairs zeroed, and
    column 0 (`exclude_bos`) and the diagonal (`exclude_current_token`)."""
    n_rows, n = rows.shape[-2:]
    width = max(q_start + n_rows, k_start + n)
    keep = real_pairs(lengths, width, q_start, q_start + n_rows)[..., k_start : k_start + n]
    if exclude_bos and k_start == 0:
        keep[:, :, 0] = False
    if exclude_current_token:
        query = torch.arange(q_start, q_start + n_rows, device=rows.device)[:, None]
        keep &= query != torch.arange(k_start, k_start + n, device=rows.device)[None, :]
    return rows * keep[:, None].to(rows.dtype)


def detector_scores(pattern, detection, lengths, exclude_bos=False, exclude_current_token=False):
    """TransformerLens' "mul" similarity score per sequence and head, padding excluded."""
    weights = kept_attention(pattern, lengths, 0, exclude_bos, exclude_current_token)
    hits = (weights * detection[:, None].to(pattern.dtype)).sum((-2, -1))
    return hits / weights.sum((-2, -1))


def dense_chunk_sums(
    rows: torch.Tensor,
    batch: Batch,
    q_start: int,
    k_start: int,
    exclude_bos: bool,
    exclude_current_token: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The former `on_pattern`: Σ A'·P per detector [detector, batch, head] and Σ A'."""
    q_stop = q_start + rows.shape[2]
    weights = kept_attention(
        rows.float(), batch.lengths, q_start, exclude_bos, exclude_current_token, k_start
    )
    detection = detection_patterns(batch.tokens, batch.lengths, q_start, q_stop)
    band = slice(k_start, k_start + rows.shape[-1])
    hits = [
        (weights * detection[name][:, None, :, band].to(weights.dtype)).sum((-2, -1))
        for name in DETECTORS
    ]
    return torch.stack(hits).double(), weights.sum((-2, -1)).double()
