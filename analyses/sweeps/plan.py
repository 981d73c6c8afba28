"""Sweep plans: what to intervene on, on which tasks — read from TOML or built from flags —
and their expansion into units of work with deterministic ids (the key for resuming).

    model = "smollm2-135m"
    name = "ioi-heads"            # the results land in runs/<run>/sweep-<name>.parquet
    batch_size = 16               # prompts per batch
    copies = 9                    # interventions stacked in one forward pass (default: n_heads)
    attribution = ["zero"]        # attribution-patching estimates for these ablation modes

    [tasks.ioi]                   # any registered task, with its parameters
    n_prompts = 32

    [single_head]                 # every head alone
    modes = ["zero", "mean", "uniform"]

    [[top_k]]                     # the k heads ranked highest by a stored metric, vs k random
    metric = "alpha"              #   heads from the same layers, for several seeds
    probe = "sink"
    position = 0
    k = [1, 2, 4, 8]
    seeds = [0, 1, 2]

    [[strength]]                  # a grid of strengths for one kind of intervention
    kind = "scale"                # scale, vhr (α) | softpag (u) | act (β) | redistribute (keep)
    values = [0.0, 0.5, 2.0]
    heads = [[3, 1], [5, 2]]      # or top = { metric = "alpha", probe = "sink", k = 4 }
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from analyses.interventions.controls import Head, layer_matched_random_heads
from analyses.interventions.registry import check_fraction, is_ablation_mode
from analyses.results import ranking as ranking_
from probes.core.errors import HeadlabError
from probes.core.options import DEFAULT_MODEL
from probes.core.schema import SweepCondition

if TYPE_CHECKING:  # plans are read and checked without torch (`headlab sweep --help` too)
    import torch

    from analyses.interventions.kinds import Intervention
    from probes.core.types import ModelInfo

STRENGTH_KINDS = ("scale", "vhr", "softpag", "act", "redistribute")
# What each kind's strength is; the shares of attention must lie in [0, 1] (a head scale α has
# no range). vhr: VHR's α on the given or top-ranked heads (e.g. top = divergence "vhd").
STRENGTH_NAMES = {"scale": "α", "vhr": "α", "softpag": "u", "act": "β", "redistribute": "keep"}


def check_strength(kind: str, values: tuple[float, ...], where: str) -> None:
    """A strength grid's kind and values, checked before any model loads."""
    if kind not in STRENGTH_KINDS:
        raise PlanError(f"{where}: kind {kind!r} is not one of {', '.join(STRENGTH_KINDS)}")
    for value in values:
        if value != value:
            raise PlanError(f"{where}: a strength value is NaN")
        if STRENGTH_NAMES[kind] != "α":
            try:
                check_fraction(value, f"{kind}'s {STRENGTH_NAMES[kind]}")
            except HeadlabError as error:
                raise PlanError(f"{where}: {error}") from None


class PlanError(HeadlabError, ValueError):
    """A plan is malformed or cannot be carried out; the message names the file and key."""


@dataclass(frozen=True)
class Ranking:
    """Heads ranked by one stored per-head metric (highest first unless `ascending`)."""

    metric: str
    probe: str | None = None
    position: int | None = None
    condition: str | None = None
    ascending: bool = False

    @property
    def label(self) -> str:
        probe = f"{self.probe}/" if self.probe else ""
        position = f"@{self.position}" if self.position is not None else ""
        condition = f"[{self.condition}]" if self.condition else ""
        order = "-asc" if self.ascending else ""
        return f"{probe}{self.metric}{position}{condition}{order}"


@dataclass(frozen=True)
class SingleHead:
    """Ablate every head alone, with each of `modes`, in `layers` (None = every layer)."""

    modes: tuple[str, ...] = ("zero",)
    layers: tuple[int, ...] | None = None  # None = every layer


@dataclass(frozen=True)
class TopK:
    """Ablate the k heads ranked highest by `ranking`, for each k, against as many layer-matched
    random heads per seed (`analyses.interventions.controls`)."""

    ranking: Ranking
    k: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    mode: str = "zero"


@dataclass(frozen=True)
class Strength:
    """A grid of strengths `values` for one intervention `kind` (scale α, softpag u, act β,
    redistribute keep) on fixed `heads` or on the `top_k` heads of a ranking `top`."""

    kind: str
    values: tuple[float, ...]
    heads: tuple[Head, ...] = ()
    top: Ranking | None = None
    top_k: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # redistribute: sources, targets, …


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep runs: on `model`, for each task in `tasks` ({name: parameters}), the units
    of `single_head`, `top_k` and `strength`, plus attribution-patching estimates for the
    ablation modes in `attribution`. Read from TOML or a dict by `plan_file`; its sha256 keys
    resuming. See the module docstring for the TOML shape."""

    model: str = DEFAULT_MODEL
    name: str = "sweep"
    tasks: dict[str, dict[str, Any]] = field(default_factory=lambda: {"ioi": {}})
    single_head: SingleHead | None = None
    top_k: tuple[TopK, ...] = ()
    strength: tuple[Strength, ...] = ()
    attribution: tuple[str, ...] = ()
    batch_size: int = 16
    copies: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Unit:
    """One intervention on one task: a row group of the sweep table, computed all at once.

    `kind` is an ablation mode or a strength kind; `value` its strength (None for ablations).
    """

    task: str
    kind: str
    heads: tuple[Head, ...]
    value: float | None = None
    group: str | None = None  # e.g. "top4:sink/alpha@0" for multi-head units
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def condition(self) -> str:
        """The row condition, encoded by the results schema (`SweepCondition`)."""
        return SweepCondition.of_unit(self.kind, self.value, self.group).encode()

    @property
    def single_head(self) -> Head | None:
        return self.heads[0] if self.group is None and len(self.heads) == 1 else None

    @property
    def id(self) -> str:
        head = self.single_head
        where = f"|L{head[0]}H{head[1]}" if head else ""
        return f"{self.task}|{self.condition}{where}"

    @property
    def first_layer(self) -> int:
        return min(layer for layer, _ in self.heads)

    def build(self, means: torch.Tensor | None) -> Intervention:
        """The intervention object; `means` ([layer, head, d_head]) for mean ablation."""
        from analyses.interventions.kinds import (
            AttentionRedistribution,
            HeadAblation,
            HeadScale,
            SoftPAG,
        )

        kind, value = self.kind, self.value
        if is_ablation_mode(kind):
            return HeadAblation(self.heads, kind, means=means)
        if kind not in STRENGTH_KINDS:
            raise PlanError(f"unit {self.id}: unknown intervention kind {kind!r}")
        if value is None:
            raise PlanError(f"unit {self.id}: a {kind!r} intervention needs a value (its strength)")
        if kind == "scale":
            return HeadScale(self.heads, value)
        if kind == "vhr":
            from analyses.interventions.vhr import VisionHeadReinforcement

            return VisionHeadReinforcement(self.heads, value)
        if kind == "softpag":
            return SoftPAG(self.heads, value)
        if kind == "act":
            return AttentionRedistribution.act(self.heads, beta=value, **dict(self.options))
        return AttentionRedistribution(self.heads, keep=value, **dict(self.options))


# --- reading plans ----------------------------------------------------------------------------


# --- expanding plans into units ---------------------------------------------------------------


def rank_heads(table: pd.DataFrame, ranking: Ranking, source: str) -> list[Head]:
    """Heads of `table` in `ranking`'s order (analyses.results.ranking); errors name `source`."""
    try:
        ranked = ranking_.rank_heads(
            table, ranking.metric, probe=ranking.probe, position=ranking.position,
            condition=ranking.condition, ascending=ranking.ascending, source=f"run {source}",
        )  # fmt: skip
    except ranking_.RankingError as error:
        raise PlanError(str(error)) from None
    return [head for head, _ in ranked]


def expand(
    plan: SweepPlan, info: ModelInfo, metrics: Callable[[], tuple[pd.DataFrame, str]]
) -> tuple[list[Unit], dict[str, list[list[int]]]]:
    """Every unit of `plan` in a fixed order, and the heads of each multi-head unit by id (as
    [layer, head] lists, for the JSON manifest).

    `metrics()` returns the stored table that rankings read and its run id (called only if a
    ranking is needed).
    """
    units: list[Unit] = []
    cached: list[tuple[pd.DataFrame, str]] = []

    def ranked(ranking: Ranking) -> list[Head]:
        if not cached:
            cached.append(metrics())
        table, source = cached[0]
        return rank_heads(table, ranking, source)

    everything = [(lay, h) for lay in range(info.n_layers) for h in range(info.n_heads)]
    for task in plan.tasks:
        if plan.single_head:
            layers = plan.single_head.layers
            for layer in layers if layers is not None else range(info.n_layers):
                if not 0 <= layer < info.n_layers:
                    raise PlanError(f"[single_head] layer {layer} is outside model {info.name!r}")
            for mode in plan.single_head.modes:
                units += [
                    Unit(task, mode, (head,)) for head in everything
                    if layers is None or head[0] in layers
                ]  # fmt: skip
        for top_k in plan.top_k:
            order = ranked(top_k.ranking)
            for k in top_k.k:
                if not 1 <= k <= len(order):
                    raise PlanError(f"top_k k={k} is outside 1..{len(order)} ranked heads")
                top = order[:k]
                label = top_k.ranking.label
                group = SweepCondition.top_group(k, label)
                units.append(Unit(task, top_k.mode, tuple(sorted(top)), group=group))
                for seed in top_k.seeds:
                    heads = layer_matched_random_heads(top, info.n_layers, info.n_heads, seed)
                    group = SweepCondition.top_group(k, label, seed, random=True)
                    units.append(Unit(task, top_k.mode, heads, group=group))
        for strength in plan.strength:
            if strength.top is not None:
                heads = tuple(sorted(ranked(strength.top)[: strength.top_k]))
                group = SweepCondition.top_group(strength.top_k, strength.top.label)
            else:
                heads = strength.heads
                group = SweepCondition.heads_group(heads)
            options = tuple(sorted(strength.options.items()))
            for value in strength.values:
                units.append(Unit(task, strength.kind, heads, value, group, options))
    ids = [unit.id for unit in units]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"plan {plan.name!r} asks for unit {duplicate!r} twice")
    import torch

    for unit in units:  # build once so bad heads or strengths fail before any model work
        try:
            unit.build(torch.zeros(info.n_layers, info.n_heads, info.d_head)).edits(info)
        except (TypeError, ValueError) as error:
            raise PlanError(f"plan {plan.name!r}, unit {unit.id}: {error}") from error
    groups = {unit.id: [list(h) for h in unit.heads] for unit in units if unit.group}
    return units, groups
