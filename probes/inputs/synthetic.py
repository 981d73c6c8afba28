"""Synthetic token sequences for probes that bring their own inputs.

Repeated random tokens, [BOS, r_1 … r_n, r_1 … r_n], are the standard input for induction
heads: the second half can only be predicted by finding the earlier occurrence of the current
token and copying the token after it (Olsson et al. 2022; TransformerLens' head_detector docs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probes.core.errors import PromptTooLongError
from probes.core.types import TokenizedPrompt
from probes.models import LoadedModel


def ordinary_token_ids(model: LoadedModel) -> list[int]:
    """Every token id of the model's tokenizer except its special tokens (BOS, EOS, pad, …)."""
    special = set(model.tokenizer.all_special_ids)
    return [index for index in range(len(model.tokenizer)) if index not in special]


def repeated_random_tokens(
    vocabulary: Sequence[int],
    n_sequences: int,
    half_len: int,
    seed: int,
    bos: int | None,
) -> list[tuple[int, ...]]:
    """`n_sequences` sequences [bos, r, r], each r `half_len` ids drawn uniformly from
    `vocabulary` (with replacement) by a generator seeded with `seed`."""
    if n_sequences < 1 or half_len < 1:
        raise ValueError(f"need n_sequences ≥ 1 and half_len ≥ 1, got {n_sequences}, {half_len}")
    if not vocabulary:
        raise ValueError("the vocabulary to draw random tokens from is empty")
    generator = torch.Generator().manual_seed(seed)
    pool = torch.tensor(list(vocabulary))
    draws = pool[torch.randint(len(pool), (n_sequences, half_len), generator=generator)]
    prefix = () if bos is None else (bos,)
    return [prefix + tuple(row.tolist()) * 2 for row in draws]


def repeated_random_prompts(
    model: LoadedModel, n_sequences: int, half_len: int, seed: int, probe: str
) -> list[TokenizedPrompt]:
    """Repeated random-token prompts for `model`, ids "rand-000", …; errors name `probe`."""
    length = 2 * half_len + (model.info.bos_token_id is not None)
    if length > model.info.n_ctx:
        raise PromptTooLongError(
            f"probe {probe!r}: half_len={half_len} makes {length}-token sequences, more than "
            f"the {model.info.n_ctx}-token context of model {model.info.name!r}"
        )
    sequences = repeated_random_tokens(
        ordinary_token_ids(model), n_sequences, half_len, seed, model.info.bos_token_id
    )
    return [TokenizedPrompt(f"rand-{index:03d}", ids) for index, ids in enumerate(sequences)]
