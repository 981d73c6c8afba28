"""Interventions composed into forward hooks: `hooks` (one hook per hook point, edits applied
in list order) and `stacked_hooks` (a batch repeated once per copy, each copy with its own
interventions). Only the interventions' `edits(info)` is used, so this module needs none of the
kinds (which re-export both)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from probes.core.types import Hook

if TYPE_CHECKING:
    from analyses.interventions.kinds import Edit, Intervention
    from probes.models import ModelInfo


def _chain(edits: list[Edit], lengths: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        for edit in edits:
            activation = edit(activation, lengths)
        return activation

    return hook


def hooks(
    interventions: Sequence[Intervention], info: ModelInfo, lengths: torch.Tensor | None = None
) -> list[Hook]:
    """One forward hook per hook point, applying the interventions' edits in list order.

    `lengths` ([batch], real tokens per right-padded row) matters only for edits that look at
    whole sequences (ACT's sink detection); None means no padding.
    """
    grouped: dict[str, list[Edit]] = defaultdict(list)
    for intervention in interventions:
        for name, edit in intervention.edits(info):
            grouped[name].append(edit)
    return [(name, _chain(edits, lengths)) for name, edits in grouped.items()]


def stacked_hooks(
    copies: Sequence[Sequence[Intervention]],
    info: ModelInfo,
    lengths: torch.Tensor | None = None,
) -> list[Hook]:
    """Hooks for a batch repeated len(copies) times along dim 0 (copy-major): copy j's rows get
    copies[j]'s interventions and nothing else. Exact, since rows never interact.

    `lengths` are the real lengths of one copy's rows.
    """
    grouped: dict[str, list[tuple[int, Edit]]] = defaultdict(list)
    for index, interventions in enumerate(copies):
        for name, edit in [e for iv in interventions for e in iv.edits(info)]:
            grouped[name].append((index, edit))
    n_copies = len(copies)

    def make(pairs: list[tuple[int, Edit]]) -> Callable[..., torch.Tensor]:
        def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            rows, remainder = divmod(activation.shape[0], n_copies)
            if remainder:
                raise ValueError(
                    f"batch of {activation.shape[0]} rows at {hook.name} is not {n_copies} copies"
                )
            out = activation.clone()
            for index, edit in pairs:
                part = slice(index * rows, (index + 1) * rows)
                out[part] = edit(out[part], lengths)
            return out

        return hook

    return [(name, make(pairs)) for name, pairs in grouped.items()]
