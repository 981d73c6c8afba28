"""Interventions on a model for the length of a `with` block.

    with HeadAblation("L18H8").applied(model):      # or applied(model, [a, b]) for several
        logits = bridge.forward(model, tokens)      # every forward pass inside runs the edits

The hooks are `kinds.hooks(...)`, attached with `probes.bridge.attached`; nothing else differs
from handing them to a forward pass. Padding is not known inside the block, so an edit that
looks at whole sequences (ACT's sink detection) treats every key as real: feed one unpadded
sequence per forward pass for exactly what `kinds.hooks(..., lengths)` would do.

A block that changed no activation (ACT on heads whose only sink is BOS, scaling by 1, no heads,
no forward pass inside) warns with a `NoEffectWarning` when it ends, saying why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from analyses.interventions.composed import hooks
from probes import bridge
from probes.core.errors import HeadlabError, HeadlabWarning
from probes.core.types import Hook

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from analyses.interventions.kinds import Intervention
    from probes.models import LoadedModel


class NoEffectWarning(HeadlabWarning):
    """Forward passes ran inside the block, but the intervention changed none of the
    activations it edits; the message says why that can happen for its kind."""


class Applied:
    """Context manager: `interventions` edit every forward pass of `model` inside the block.

    Built eagerly, so heads the model lacks fail here, before the block. After the block,
    `calls` counts the edited hook calls and `changed` says whether any edit changed its input.
    """

    def __init__(self, model: LoadedModel, interventions: Sequence[Intervention]) -> None:
        self.model = model
        self.interventions = tuple(interventions)
        self.calls = 0
        self.changed = False
        self._hooks = [(name, self._watched(hook)) for name, hook in
                       hooks(self.interventions, model.info)]  # fmt: skip
        self._context: AbstractContextManager[None] | None = None

    def _watched(self, edit: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def watched(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            edited = edit(activation, hook)
            self.calls += 1
            self.changed = self.changed or not torch.equal(edited, activation)
            return edited

        return watched

    @property
    def hooks(self) -> list[Hook]:
        """The (hook name, function) pairs attached inside the block."""
        return list(self._hooks)

    def __enter__(self) -> Applied:
        if self._context is not None:
            raise HeadlabError(f"{self.label} is already applied; leave its block first")
        self.calls, self.changed = 0, False
        self._context = bridge.attached(self.model, self._hooks)
        self._context.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(kind, error, traceback)
        if error is None and not self.changed:
            warnings.warn(NoEffectWarning(self._no_effect()), stacklevel=2)

    def _no_effect(self) -> str:
        what = f"{self.label} changed nothing on model {self.model.info.name!r}"
        if not self._hooks:
            return f"{what}: no heads given"
        if not self.calls:
            return (
                f"{what}: no forward pass through the bridge ran inside the block (a model "
                "called around the bridge does not run its hooks)"
            )
        hints = "; ".join(hint for iv in self.interventions if (hint := iv.no_effect_hint))
        return f"{what} in {self.calls} hook calls" + (f": {hints}" if hints else "")

    @property
    def label(self) -> str:
        return " + ".join(iv.label for iv in self.interventions) or "no intervention"


def applied(model: LoadedModel, interventions: Sequence[Intervention]) -> Applied:
    """`interventions` (composed in list order) on `model` inside a `with` block."""
    return Applied(model, interventions)
