"""Plant known attention behaviour in a model's heads, so metrics have an exact right answer.

A planting hook overwrites one head's pre-softmax scores (`hook_attn_scores`), so the softmax
that follows produces exactly the pattern we want and every later hook (the probes') sees it.
Register planting hooks before probe hooks on the same hook point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from probes import hooks

BIG = 1e4  # a score gap that makes softmax put all mass on the chosen key (exp(-1e4) == 0)


def _plant(layer: int, head: int, make_scores: Callable[[int, int], torch.Tensor]):
    def hook(scores: torch.Tensor, hook) -> torch.Tensor:
        q_len, k_len = scores.shape[-2:]
        planted = make_scores(q_len, k_len).to(scores)
        causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        planted = planted.masked_fill(~causal, torch.finfo(scores.dtype).min)
        scores = scores.clone()
        scores[:, head] = planted
        return scores

    return (hooks.attn(layer, "attn_scores"), hook)


def bos_head(layer: int, head: int):
    """All attention on position 0."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        scores = torch.zeros(q_len, k_len)
        scores[:, 0] = BIG
        return scores

    return _plant(layer, head, make)


def uniform_head(layer: int, head: int):
    """Uniform attention over every visible key."""
    return _plant(layer, head, lambda q_len, k_len: torch.zeros(q_len, k_len))


def previous_token_head(layer: int, head: int):
    """Attention on the previous token (position 0 attends to itself)."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        offset = k_len - q_len
        scores = torch.zeros(q_len, k_len)
        for query in range(q_len):
            absolute = query + offset
            scores[query, max(absolute - 1, 0)] = BIG
        return scores

    return _plant(layer, head, make)


def attend_to(layer: int, head: int, key_of_query: Callable[[int], int]):
    """Each query (absolute position q) attends only to key `key_of_query(q)` (must be ≤ q)."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        offset = k_len - q_len
        scores = torch.zeros(q_len, k_len)
        for query in range(q_len):
            scores[query, key_of_query(query + offset)] = BIG
        return scores

    return _plant(layer, head, make)
