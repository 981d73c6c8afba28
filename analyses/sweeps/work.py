"""A sweep's work: the items it is cut into and the worker that computes one item's rows.

An `Item` is one chunk file to be: a task's clean measures, a chunk of units that share
stacked forward passes, or one attribution estimate. Items are cut the same way whatever runs
them, so a part written by any executor covers the same units, and a unit's numbers come from
the same passes (the same copies stacked together) on every executor.

A `Worker` holds a loaded model and computes items: it prepares a task (batches, clean pass,
kept residuals, head means) on its first item of that task and keeps it until an item of
another task arrives. It returns rows and never writes: the driver writes every part. The local
executor (analyses.executors) runs one `Worker` in the driver's process, the Ray executor one
per actor; each builds it from a `SweepJob`.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from analyses.sweeps import generation as generation  # registers the "generation" task
from analyses.sweeps.parts import attribution_rows, clean_rows, unit_rows
from analyses.sweeps.plan import SweepPlan, Unit
from analyses.sweeps.tasks import ForwardTask, Task, TaskBatch, make_task, read_positions_hooks
from probes.models import LoadedModel, ModelInfo

LOGITS_BUDGET_BYTES = 768 * 2**20  # largest logits tensor one stacked pass may produce


@dataclass(frozen=True)
class Item:
    """One part to compute. `layers` are the layers whose clean residuals the task keeps (the
    same for every item of a task in one session)."""

    task: str
    kind: Literal["clean", "units", "attribution"]
    units: tuple[Unit, ...] = ()
    mode: str | None = None  # the ablation mode of an attribution item
    layers: tuple[int, ...] = ()

    @property
    def ids(self) -> list[str]:
        """The ids the part records (what a rerun skips)."""
        if self.kind == "clean":
            return [f"{self.task}|clean"]
        if self.kind == "attribution":
            return [f"{self.task}|attribution:{self.mode}"]
        return [unit.id for unit in self.units]


@dataclass(frozen=True)
class Layout:
    """What the driver needs from a loaded model to cut the plan into items."""

    info: ModelInfo
    provenance: dict[str, Any]
    chunk_sizes: dict[str, int]  # task -> units per chunk (copies stacked in one pass)


@dataclass(frozen=True)
class Outcome:
    """An item's rows, computed by `worker` (host:pid) with `threads` torch threads;
    `prefix_reuse` for forward tasks."""

    rows: list[dict[str, Any]]
    worker: str
    threads: int
    prefix_reuse: bool | None = None


def chunks(units: Sequence[Unit], size: int) -> list[list[Unit]]:
    """Units grouped by the layer they start at, at most `size` per group, in a fixed order."""
    by_layer: dict[int, list[Unit]] = defaultdict(list)
    for unit in units:
        by_layer[unit.first_layer].append(unit)
    return [
        group[start : start + size]
        for _, group in sorted(by_layer.items())
        for start in range(0, len(group), size)
    ]


def plan_items(
    units: Sequence[Unit],
    tasks: Sequence[str],
    attribution: Sequence[str],
    layout: Layout,
    done: set[str],
) -> list[Item]:
    """The items still to do, task by task: clean, chunks of units, attribution estimates.

    Chunks are cut from every unit of the plan and then stripped of finished units, so a rerun
    computes each remaining unit in the chunk it had in the first session.
    """
    items: list[Item] = []
    for name in tasks:
        task_units = [unit for unit in units if unit.task == name]
        todo = [unit for unit in task_units if unit.id not in done]
        layers = tuple(sorted({u.first_layer for u in todo} | {layout.info.n_layers // 2}))
        work = [
            Item(name, "units", tuple(left), layers=layers)
            for chunk in chunks(task_units, layout.chunk_sizes[name])
            if (left := [unit for unit in chunk if unit.id not in done])
        ]
        work += [Item(name, "attribution", mode=mode, layers=layers) for mode in attribution]
        work = [item for item in work if item.kind == "units" or item.ids[0] not in done]
        clean = Item(name, "clean", layers=layers)
        if clean.ids[0] not in done:
            work.insert(0, clean)
        items += work
    return items


def copies_per_pass(model: LoadedModel, batches: Sequence[TaskBatch], wanted: int) -> int:
    """Copies whose logits fit the budget: the vocabulary projection dominates memory."""
    from probes import bridge

    vocab = bridge.vocab_size(model)
    widest = max(
        len(tb.batch.lengths) * (tb.read_at.shape[1] if tb.read_at is not None else
                                 tb.batch.tokens.shape[1])
        for tb in batches
    )  # fmt: skip
    return max(1, min(wanted, LOGITS_BUDGET_BYTES // (widest * vocab * 4)))


class PreparedTask:
    """A forward task's batches, clean residuals and means, computed once per process."""

    def __init__(self, model: Any, task: ForwardTask, batch_size: int, layers: set[int]) -> None:
        from analyses.interventions.means import HeadMeans
        from analyses.sweeps.prefix import clean_residuals

        self.model, self.task = model, task
        self.batches: list[TaskBatch] = task.prepare(model, batch_size)
        head_means = HeadMeans(model.info)  # collected during the clean passes
        self.residuals: list[dict[int, torch.Tensor]] = []
        totals: dict[str, float] = defaultdict(float)
        for task_batch in self.batches:
            extra = head_means.hooks(task_batch.batch)
            extra += read_positions_hooks(task_batch.read_at, copies=1)
            logits, residuals = clean_residuals(model, task_batch.batch, sorted(layers), extra)
            self.residuals.append(residuals)
            for measure, value in task.score(logits, task_batch).items():
                totals[measure] += float(value)
        self.weight = sum(task.weight(tb) for tb in self.batches)
        self.clean = {measure: total / self.weight for measure, total in totals.items()}
        self.means = head_means.means()

    def copies_per_pass(self, wanted: int) -> int:
        return copies_per_pass(self.model, self.batches, wanted)

    def run_stacked(self, units: Sequence[Unit], reuse: bool) -> list[dict[str, float]]:
        """Each unit's measures; all units start at the same layer and share every pass."""
        from analyses.interventions.kinds import stacked_hooks
        from analyses.sweeps.prefix import resume

        info, n = self.model.info, len(units)
        layer = units[0].first_layer if reuse else 0
        copies = [[unit.build(self.means)] for unit in units]
        totals: list[defaultdict[str, float]] = [defaultdict(float) for _ in units]
        for task_batch, residuals in zip(self.batches, self.residuals, strict=True):
            batch = task_batch.batch
            rows = len(batch.lengths)
            fwd_hooks = stacked_hooks(copies, info, batch.lengths)
            fwd_hooks += read_positions_hooks(task_batch.read_at, copies=n)
            mask = batch.attention_mask.repeat(n, 1)
            if reuse:
                start = residuals[layer].repeat(n, 1, 1)
                logits = resume(self.model, start, layer, mask, fwd_hooks)
            else:
                logits = _full_forward(self.model, batch.tokens.repeat(n, 1), mask, fwd_hooks)
            for index in range(n):
                part = logits[index * rows : (index + 1) * rows]
                for measure, value in self.task.score(part, task_batch).items():
                    totals[index][measure] += float(value)
        return [{m: total / self.weight for m, total in t.items()} for t in totals]

    def resume_ok(self) -> bool:
        """Whether restarting mid-network reproduces the clean logits (checked on one batch,
        from the residual its clean pass kept)."""
        from analyses.sweeps.prefix import resume_is_exact

        layer = self.model.info.n_layers // 2
        task_batch = self.batches[0]
        hooks = read_positions_hooks(task_batch.read_at, copies=1)
        residual = self.residuals[0][layer]
        return resume_is_exact(
            self.model, task_batch.batch, layer, residual=residual, fwd_hooks=hooks
        )


def _full_forward(model: Any, tokens: torch.Tensor, mask: torch.Tensor, fwd_hooks: list) -> Any:
    from probes import bridge

    return bridge.forward(model, tokens, fwd_hooks, attention_mask=mask)


@dataclass
class _Ready:
    """What a worker keeps of the task it is on."""

    key: tuple[str, tuple[int, ...]]
    clean: dict[str, float]
    prepared: PreparedTask | None = None
    reuse: bool | None = None


@dataclass(frozen=True)
class SweepJob:
    """What a process needs to compute a sweep's items (picklable; analyses.executors)."""

    plan: SweepPlan
    device: str
    dtype: str
    prefix_reuse: bool = True

    def worker(self, model: LoadedModel | None = None) -> Worker:
        """A worker on `model`, or on the plan's model loaded here."""
        from analyses.sweeps.plan import PlanError
        from probes.models import load

        if model is None:
            model = load(self.plan.model, device=self.device, dtype=self.dtype)
        elif model.info.name != self.plan.model:
            raise PlanError(f"the plan is for model {self.plan.model!r}, not {model.info.name!r}")
        return Worker(self.plan, model, prefix_reuse=self.prefix_reuse)


class Worker:
    """Computes items of `plan` on `model` (see the module docstring)."""

    def __init__(self, plan: SweepPlan, model: LoadedModel, *, prefix_reuse: bool = True) -> None:
        self.plan, self.model, self.prefix_reuse = plan, model, prefix_reuse
        self.tasks: dict[str, Task] = {name: make_task(name, params)
                                       for name, params in plan.tasks.items()}  # fmt: skip
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._ready: _Ready | None = None

    def layout(self) -> Layout:
        wanted = self.plan.copies or self.model.info.n_heads
        sizes = {}
        for name, task in self.tasks.items():
            if isinstance(task, ForwardTask):
                batches = task.prepare(self.model, self.plan.batch_size)
                sizes[name] = copies_per_pass(self.model, batches, wanted)
            else:
                sizes[name] = wanted
        return Layout(self.model.info, dict(self.model.provenance), sizes)

    def compute(self, item: Item, progress: Callable[[int], None] | None = None) -> Outcome:
        """The rows of `item`'s part (the driver counts its units: no `progress` inside)."""
        from analyses.sweeps.attribution import attribution_scores

        task, ready = self.tasks[item.task], self._prepare(item)
        rows: list[dict[str, Any]]
        if item.kind == "clean":
            rows = clean_rows(item.task, ready.clean)
        elif item.kind == "attribution":
            if ready.prepared is None or not isinstance(task, ForwardTask) or item.mode is None:
                raise ValueError(f"attribution item {item.ids} of a task without one forward pass")
            prepared = ready.prepared
            scores = attribution_scores(
                self.model, task, prepared.batches, [item.mode], prepared.means
            )
            rows = attribution_rows(task, scores[item.mode], item.mode)
        else:
            if ready.prepared is not None:
                results = ready.prepared.run_stacked(item.units, bool(ready.reuse))
            else:
                results = task.evaluate_stacked(self.model, [[u.build(None)] for u in item.units])
            rows = [row for unit, measures in zip(item.units, results, strict=True)
                    for row in unit_rows(unit, measures, ready.clean, task)]  # fmt: skip
        return Outcome(rows, self.name, torch.get_num_threads(), ready.reuse)

    def _prepare(self, item: Item) -> _Ready:
        key = (item.task, item.layers)
        if self._ready is not None and self._ready.key == key:
            return self._ready
        self._ready = None  # drop the previous task's residuals before the next clean pass
        task = self.tasks[item.task]
        if isinstance(task, ForwardTask):
            prepared = PreparedTask(self.model, task, self.plan.batch_size, set(item.layers))
            reuse = self.prefix_reuse and prepared.resume_ok()
            self._ready = _Ready(key, prepared.clean, prepared, reuse)
        else:
            self._ready = _Ready(key, task.evaluate(self.model, []))
        return self._ready
