"""Interventions on attention heads: small frozen value objects that emit forward hooks.

An intervention never touches the model. `edits(info)` turns it into (hook name, edit) pairs,
where an edit is a pure function `(activation, lengths) -> new activation` that never changes
its input in place. `hooks(...)` composes any list of interventions into one hook list for a
forward pass; `stacked_hooks(...)` gives each copy of a batch expanded along its first dimension
its own interventions, so several share one pass; `intervention.applied(model)` edits every
pass inside a `with` block (`analyses.interventions.applied`).

The tensor maths is in `analyses.interventions.edits` (hook points and shapes there). Every kind
is registered by name in `analyses.interventions.registry` (`INTERVENTIONS`) when this module is
imported:
  head_ablation             HeadAblation: zero, mean or uniform-attention knock-out (hook_z/rot_q)
  head_scale                HeadScale: multiply outputs by α (hook_z)
  soft_pag                  SoftPAG: blend patterns towards identity attention (hook_pattern)
  attention_redistribution  AttentionRedistribution: ACT / VAR sink redistribution (hook_pattern)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Self

import torch

from analyses.interventions.composed import hooks as hooks
from analyses.interventions.composed import stacked_hooks as stacked_hooks
from analyses.interventions.edits import (
    act_sinks,
    redistribute,
    replace_heads,
    scale_heads,
    soft_pag,
)
from analyses.interventions.registry import (
    ABLATION_MODES,
    AblationMode,
    check_fraction,
    register_intervention,
)
from probes.core import hook_names as hook_names
from probes.core.errors import ConfigError
from probes.core.heads import HeadsLike, check_in_model, heads_of
from probes.models import ModelInfo

if TYPE_CHECKING:
    from analyses.interventions.applied import Applied
    from probes.models import LoadedModel

Head = tuple[int, int]  # (layer, head); head indexes query heads
Edit = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# --- value objects ----------------------------------------------------------------------------


def _by_layer(heads: Sequence[Head]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        grouped[layer].append(head)
    return dict(sorted(grouped.items()))


def _label_heads(heads: Sequence[Head]) -> str:
    return ",".join(f"L{layer}H{head}" for layer, head in heads)


class Intervention(ABC):
    """Something done to some heads. Subclasses are frozen dataclasses with a `heads` field and
    a registry `name` (`@register_intervention`)."""

    name: ClassVar[str]
    heads: tuple[Head, ...]

    @abstractmethod
    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        """(hook name, edit) pairs for the heads of one layer."""

    @property
    @abstractmethod
    def label(self) -> str:
        """A short stable description, used in result tables and sweep unit ids."""

    def edits(self, info: ModelInfo) -> list[tuple[str, Edit]]:
        """All (hook name, edit) pairs, after checking the heads exist in the model."""
        check_in_model(self.heads, info, self.label)
        return [
            edit
            for layer, heads in _by_layer(self.heads).items()
            for edit in self.layer_edits(layer, heads)
        ]

    @property
    def first_layer(self) -> int:
        """The earliest layer touched; everything before it runs exactly as in the clean pass."""
        return min((layer for layer, _ in self.heads), default=0)

    def applied(self, model: LoadedModel) -> Applied:
        """This intervention on every forward pass of `model` inside a `with` block
        (`analyses.interventions.applied`; it warns if the block's passes were left unchanged)."""
        from analyses.interventions.applied import Applied

        return Applied(model, [self])

    @property
    def no_effect_hint(self) -> str:
        """Why this intervention may leave activations unchanged (said when it does)."""
        return ""


@register_intervention
@dataclass(frozen=True)
class HeadAblation(Intervention):
    """Knock heads out: "zero" their output, set it to its "mean" over a reference set, or
    give them "uniform" attention over the visible keys (the retrieval-head authors' mask:
    post-RoPE query = 0, so every visible key scores 0; the output becomes the mean of V).

    `means` ([layer, head, d_head], e.g. from `analyses.interventions.means.head_means`) is
    needed for "mean" only.
    """

    name: ClassVar[str] = "head_ablation"
    heads: tuple[Head, ...]
    mode: AblationMode = "zero"
    means: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads, "HeadAblation.heads"))
        if self.mode not in ABLATION_MODES:
            raise ConfigError(
                f"HeadAblation.mode must be one of {ABLATION_MODES}, got {self.mode!r}"
            )
        if self.mode == "mean" and self.means is None:
            raise ConfigError("HeadAblation(mode='mean') needs `means` [layer, head, d_head]")

    @property
    def label(self) -> str:
        return f"{self.mode}({_label_heads(self.heads)})"

    def _means(self) -> torch.Tensor:
        """`means`, which mode "mean" needs (`__post_init__` refuses it without them)."""
        if self.means is None:
            raise ValueError("HeadAblation(mode='mean') needs `means` [layer, head, d_head]")
        return self.means

    def edits(self, info: ModelInfo) -> list[tuple[str, Edit]]:
        if self.mode == "mean" and tuple(self._means().shape) != (
            info.n_layers,
            info.n_heads,
            info.d_head,
        ):
            raise ConfigError(
                f"HeadAblation.means has shape {tuple(self._means().shape)}; model {info.name!r} "
                f"needs [layer, head, d_head] = {(info.n_layers, info.n_heads, info.d_head)}"
            )
        return super().edits(info)

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        if self.mode == "uniform":
            return [(hook_names.attn(layer, "rot_q"), lambda q, _: replace_heads(q, heads, 0.0))]
        value = 0.0 if self.mode == "zero" else self._means()[layer, heads]
        return [(hook_names.attn(layer, "z"), lambda z, _: replace_heads(z, heads, value))]


@register_intervention
@dataclass(frozen=True)
class HeadScale(Intervention):
    """Multiply heads' outputs by `alpha` (VHR reinforces the top vision-aware heads, α ≈ 2)."""

    name: ClassVar[str] = "head_scale"
    heads: tuple[Head, ...]
    alpha: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads, "HeadScale.heads"))

    @property
    def label(self) -> str:
        return f"scale{self.alpha:g}({_label_heads(self.heads)})"

    @property
    def no_effect_hint(self) -> str:
        return "alpha = 1 is the identity" if self.alpha == 1 else ""

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        return [(hook_names.attn(layer, "z"), lambda z, _: scale_heads(z, heads, self.alpha))]


@register_intervention
@dataclass(frozen=True)
class SoftPAG(Intervention):
    """SoftPAG: A' = (1 − u)·A + u·I on the heads' patterns; u = 1 is identity attention."""

    name: ClassVar[str] = "soft_pag"
    heads: tuple[Head, ...]
    u: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads, "SoftPAG.heads"))
        check_fraction(self.u, "SoftPAG.u")

    @property
    def label(self) -> str:
        return f"softpag{self.u:g}({_label_heads(self.heads)})"

    @property
    def no_effect_hint(self) -> str:
        return "u = 0 is the identity" if self.u == 0 else ""

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        def edit(pattern: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
            out = pattern.clone()
            out[:, heads] = soft_pag(pattern[:, heads], self.u)
            return out

        return [(hook_names.attn(layer, "pattern"), edit)]


@register_intervention
@dataclass(frozen=True)
class AttentionRedistribution(Intervention):
    """Move attention from sink tokens to target tokens, keeping a fraction `keep` on the sinks.

    sources: sink key positions, or None to detect them per head and input as ACT does
        (α > `threshold`, sparing the first sink found when `spare_first`).
    targets: a [start, stop) span of key positions, or None for every key that is not a source
        (ACT). VAR: the image tokens.
    queries_from: query rows before this position are left alone (VAR edits only the text
        after the image in the prefill).
    Use `AttentionRedistribution.act(...)` / `.var(...)` for the authors' settings.
    """

    name: ClassVar[str] = "attention_redistribution"
    heads: tuple[Head, ...]
    keep: float
    sources: tuple[int, ...] | None = None
    targets: tuple[int, int] | None = None
    threshold: float = 0.1
    spare_first: bool = True
    queries_from: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads, "AttentionRedistribution.heads"))
        check_fraction(self.keep, "AttentionRedistribution.keep")
        if self.sources is not None:
            sources = tuple(int(k) for k in self.sources)
            if any(k < 0 for k in sources):
                raise ConfigError(f"AttentionRedistribution.sources must be >= 0, got {sources}")
            object.__setattr__(self, "sources", sources)
        if self.targets is not None:
            start, stop = (int(x) for x in self.targets)
            if not 0 <= start < stop:
                raise ConfigError(
                    f"AttentionRedistribution.targets is a [start, stop) span, got {self.targets}"
                )
            object.__setattr__(self, "targets", (start, stop))

    @classmethod
    def act(cls, heads: HeadsLike, beta: float = 0.4, threshold: float = 0.1) -> Self:
        """ACT (Yu et al. 2024): detected sinks but the first keep β; the rest gain pro rata.

        Like the authors' code (`indices[1:]`) it spares each head's first sink, nearly always
        BOS, so a head whose only sink is BOS is left as it is (`applied` warns). To move
        attention off BOS: `AttentionRedistribution(heads, keep=β, sources=(0,))`."""
        check_fraction(beta, "ACT's beta (the share the sinks keep)")
        return cls(
            heads=heads_of(heads, "AttentionRedistribution.heads"), keep=beta, threshold=threshold
        )

    @classmethod
    def var(
        cls,
        heads: HeadsLike,
        sinks: Sequence[int],
        image: tuple[int, int],
        p: float = 0.6,
    ) -> Self:
        """VAR's redistribution on fixed sinks and heads: sinks keep p; the image gets the rest.
        The paper's method (sinks by massive activation, image-centric heads chosen per query at
        every pass) is `analyses.interventions.visual_sinks.VisualAttentionRedistribution`."""
        check_fraction(p, "VAR's p (the share the sinks keep)")
        return cls(
            heads=heads_of(heads, "AttentionRedistribution.heads"),
            keep=p,
            sources=tuple(sinks),
            targets=image,
            queries_from=image[1],
        )

    @property
    def no_effect_hint(self) -> str:
        if self.keep == 1:
            return "keep = 1 leaves all attention on the sources"
        if self.sources is None and self.spare_first:
            return (
                "ACT spares the first sink it detects in each head (BOS on most heads) and moves "
                f"attention only off later sinks with alpha > {self.threshold:g}, which these "
                "heads did not have; to move attention off BOS give sources=(0,)"
            )
        return ""

    @property
    def label(self) -> str:
        where = "detect" if self.sources is None else "+".join(map(str, self.sources))
        to = "rest" if self.targets is None else f"{self.targets[0]}:{self.targets[1]}"
        return f"redistribute{self.keep:g}[{where}->{to}]({_label_heads(self.heads)})"

    def _masks(
        self, pattern: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k_len = pattern.shape[-1]
        positions = torch.arange(k_len, device=pattern.device)
        if self.sources is None:
            sources = act_sinks(pattern, lengths, self.threshold, self.spare_first)
        else:
            sources = torch.isin(positions, torch.tensor(self.sources, device=pattern.device))
        if self.targets is None:
            targets = torch.ones(k_len, dtype=torch.bool, device=pattern.device)
        else:
            targets = (positions >= self.targets[0]) & (positions < self.targets[1])
        q_len = pattern.shape[-2]
        queries = torch.arange(q_len, device=pattern.device) + (k_len - q_len) >= self.queries_from
        return sources, targets, queries

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        def edit(pattern: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
            chosen = pattern[:, heads]
            sources, targets, queries = self._masks(chosen, lengths)
            out = pattern.clone()
            out[:, heads] = redistribute(chosen, sources, targets, self.keep, queries)
            return out

        return [(hook_names.attn(layer, "pattern"), edit)]
