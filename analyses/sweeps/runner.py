"""The sweep job: run a plan's interventions on its tasks and merge the results into a run.

Resumable: every unit of work has a deterministic id (analyses.sweeps.plan.Unit.id). Finished units
are appended as small parquet parts, each written atomically and listing its unit ids in its
metadata, under runs/<run>/sweep-<name>.parts/. A rerun of the same command skips the listed
units, so a sweep killed at any moment (SIGKILL included) finishes with no row lost or doubled.
At the end the parts are merged into runs/<run>/sweep-<name>.parquet and the plan is recorded
in the run's manifest under "sweeps".

Efficient: for a forward task every batch is run clean once, keeping the residual stream that
enters each layer; each intervention restarts there (analyses.prefix), and up to `copies`
interventions that start at the same layer share one forward pass, one per copy of the batch
(exact: rows never interact). Only the logits a task reads go through the unembedding.

Rows (probe "sweep"): metric "<task>.<measure>" with the measure under the intervention, and
"<task>.<measure>.harm" = how much worse the task got than clean (positive = worse), with
condition = the unit's condition ("zero", "scale=2|heads:L3H1", "zero|top4:sink/alpha@0", …)
and layer/head set for single-head units. Attribution-patching estimates of the same harm have
probe "attribution" and condition = the ablation mode.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses.results import locks, store
from analyses.results import manifest as manifests
from analyses.sweeps.parts import (
    PARTS_SUFFIX,
    attribution_rows,
    done_units,
    merge,
    table_path,
    unit_rows,
    write_clean,
    write_part,
)
from analyses.sweeps.plan import PlanError, SweepPlan, Unit, expand
from analyses.sweeps.tasks import ForwardTask, Task, TaskBatch, make_task, read_positions_hooks
from probes.core.errors import HeadlabError
from probes.models import LoadedModel

LOGITS_BUDGET_BYTES = 768 * 2**20  # largest logits tensor one stacked pass may produce


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep plan runs: where its rows go (`data_dir`, `run_id`), which run its rankings
    read (`metrics_run`), the device, and whether to show progress."""

    # The CLI (analyses/cli/sweep.py) sets the fields without {"cli": False} from flags of the
    # same dest, so config_from_args builds this; the others come from the plan it reads.
    plan: SweepPlan = field(metadata={"cli": False})
    data_dir: Path = Path("data")
    run_id: str | None = None  # the run to merge into; default: one named after the plan
    metrics_run: str | None = None  # where rankings read stored metrics; default: run_id
    device: str = "cpu"
    progress: bool = True
    plan_source: str = field(default="flags", metadata={"cli": False})
    # False runs every intervention as a full forward (benchmarks)
    prefix_reuse: bool = field(default=True, metadata={"cli": False})

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], name: str) -> SweepConfig:
        """The config sweep `name` of a stored run ran with (several sweeps may share a run)."""
        sweeps = manifest.get("sweeps", {})
        if name not in sweeps:
            raise PlanError(f"the run holds no sweep {name!r}; it holds {sorted(sweeps)}")
        return manifests.config_from_record(cls, sweeps[name]["config"])


def default_run_id(plan: SweepPlan) -> str:
    return f"sweep-{plan.model.replace('/', '_')}-{plan.sha256[:10]}"[:120]


# --- parts ------------------------------------------------------------------------------------


# --- running one task -------------------------------------------------------------------------


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
        """Copies whose logits fit the budget: the vocabulary projection dominates memory."""
        from probes import bridge

        vocab = bridge.vocab_size(self.model)
        widest = max(
            len(tb.batch.lengths) * (tb.read_at.shape[1] if tb.read_at is not None else
                                     tb.batch.tokens.shape[1])
            for tb in self.batches
        )  # fmt: skip
        return max(1, min(wanted, LOGITS_BUDGET_BYTES // (widest * vocab * 4)))

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


def _full_forward(model: Any, tokens: torch.Tensor, mask: torch.Tensor, fwd_hooks: list) -> Any:
    from probes import bridge

    return bridge.forward(model, tokens, fwd_hooks, attention_mask=mask)


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


# --- the job ----------------------------------------------------------------------------------


def _open_run(config: SweepConfig, run_id: str, model: Any) -> Path:
    directory = store.run_dir(config.data_dir, run_id)
    if not directory.exists():
        manifest = manifests.build("sweep", config, model=model.provenance, n_rows=0)
        store.write_run(config.data_dir, run_id, pd.DataFrame(columns=store.COLUMNS), manifest)
    status = store.run_status(config.data_dir, run_id)
    if status != "ok":  # merging into a broken run would bury the damage under new rows
        raise store.StoreError(f"run {run_id!r} cannot take the sweep: it is {status}")
    stored_model = store.read_manifest(config.data_dir, run_id).get("model", {}).get("model")
    if stored_model not in (None, config.plan.model):
        raise PlanError(
            f"run {run_id!r} holds results of model {stored_model!r}; the plan is for "
            f"{config.plan.model!r}"
        )
    return directory


def _check_same_plan(parts: Path, config: SweepConfig, run_id: str) -> None:
    marker = parts / "plan.json"
    recorded = None
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("plan_sha256")
    else:
        sweeps = store.read_manifest(config.data_dir, run_id).get("sweeps", {})
        recorded = sweeps.get(config.plan.name, {}).get("plan_sha256")
    if recorded not in (None, config.plan.sha256):
        raise PlanError(
            f"run {run_id!r} already has a sweep named {config.plan.name!r} from a different "
            "plan; give this plan another name"
        )


def run(config: SweepConfig, model: LoadedModel | None = None) -> Path:
    """Run (or finish) the sweep described by `config`; return the merged table's path.

    `model` is loaded from the plan's model name unless given (e.g. a hand-built test model
    whose `info.name` is the plan's model).
    """
    plan = config.plan
    run_id = store.validate_run_id(config.run_id or default_run_id(plan))
    tasks = {name: make_task(name, params, f"{config.plan_source}: ") for name, params in
             plan.tasks.items()}  # fmt: skip
    what = f"sweep {plan.name!r} of run {run_id!r}"
    directory = store.run_dir(config.data_dir, run_id)
    created = not directory.exists()
    with locks.writing(store.runs_root(config.data_dir), run_id, what):  # one writer per run
        try:
            return _run(config, run_id, tasks, model)
        except HeadlabError as error:
            parts = directory / f"sweep-{plan.name}{PARTS_SUFFIX}"
            if created and directory.exists() and not (parts.exists() and done_units(parts)):
                shutil.rmtree(directory)  # it failed before finishing anything: leave nothing
            if config.plan_source in str(error):
                raise
            raise type(error)(f"{config.plan_source}: {error}") from error


def _run(
    config: SweepConfig, run_id: str, tasks: dict[str, Task], model: LoadedModel | None
) -> Path:
    from analyses.sweeps.attribution import attribution_scores
    from probes.models import load

    plan = config.plan
    started = time.perf_counter()
    directory = store.run_dir(config.data_dir, run_id)
    parts = directory / f"sweep-{plan.name}{PARTS_SUFFIX}"
    final = table_path(directory, plan.name)
    if directory.exists():
        _check_same_plan(parts, config, run_id)
        if final.is_file() and not parts.exists():
            return final  # finished earlier
    if model is None:
        model = load(plan.model, device=config.device)
    elif model.info.name != plan.model:
        raise PlanError(f"the plan is for model {plan.model!r}, not {model.info.name!r}")

    def metrics() -> tuple[pd.DataFrame, str]:
        source = config.metrics_run or run_id
        return store.load_run(config.data_dir, source), source

    # The whole plan is expanded and checked before the run directory exists.
    units, groups = expand(plan, model.info, metrics)
    for name, task in tasks.items():
        if not isinstance(task, ForwardTask) and (
            plan.attribution or any(u.kind == "mean" for u in units if u.task == name)
        ):
            raise PlanError(f"task {name!r} is not scored from one forward pass: it supports "
                            "neither mean ablation nor attribution patching")  # fmt: skip
    directory = _open_run(config, run_id, model)
    parts.mkdir(parents=True, exist_ok=True)
    locks.remove_leftovers(parts)  # temporaries of a writer killed mid-part
    store.write_json(parts / "plan.json", {"plan_sha256": plan.sha256, "plan": plan.as_dict()})
    done = done_units(parts)
    todo = [unit for unit in units if unit.id not in done]
    attribution_ids = [f"{name}|attribution:{mode}" for name in tasks for mode in plan.attribution]
    copies_wanted = plan.copies or model.info.n_heads
    prefix_reuse: dict[str, bool] = {}
    n_done_now, loaded = 0, time.perf_counter()
    with tqdm(total=len(todo), unit="unit", desc=f"sweep {plan.name}",
              disable=not config.progress) as bar:  # fmt: skip
        for name, task in tasks.items():
            task_units = [unit for unit in todo if unit.task == name]
            task_attr = [a for a in attribution_ids if a.startswith(f"{name}|") and a not in done]
            clean_id = f"{name}|clean"
            if not task_units and not task_attr and clean_id in done:
                continue
            if not isinstance(task, ForwardTask):
                clean = task.evaluate(model, [])
                write_clean(parts, name, clean, clean_id, done)
                for chunk in chunks(task_units, copies_wanted):
                    results = task.evaluate_stacked(model, [[u.build(None)] for u in chunk])
                    rows = [row for unit, measures in zip(chunk, results, strict=True)
                            for row in unit_rows(unit, measures, clean, task)]  # fmt: skip
                    write_part(parts, rows, [unit.id for unit in chunk])
                    bar.update(len(chunk))
                    n_done_now += len(chunk)
                continue
            layers = {unit.first_layer for unit in task_units} | {model.info.n_layers // 2}
            prepared = PreparedTask(model, task, plan.batch_size, layers)
            reuse = config.prefix_reuse and _resume_ok(model, prepared)
            prefix_reuse[name] = reuse
            write_clean(parts, name, prepared.clean, clean_id, done)
            size = prepared.copies_per_pass(copies_wanted)
            for chunk in chunks(task_units, size):
                results = prepared.run_stacked(chunk, reuse)
                rows = [row for unit, measures in zip(chunk, results, strict=True)
                        for row in unit_rows(unit, measures, prepared.clean, task)]  # fmt: skip
                write_part(parts, rows, [unit.id for unit in chunk])
                bar.update(len(chunk))
                n_done_now += len(chunk)
            for unit_id in task_attr:
                mode = unit_id.split("attribution:")[1]
                scores = attribution_scores(model, task, prepared.batches, [mode], prepared.means)
                write_part(parts, attribution_rows(task, scores[mode], mode), [unit_id])
    swept = time.perf_counter()
    table = merge(parts, [u.id for u in units] + attribution_ids + [f"{n}|clean" for n in tasks])
    table = table.assign(run_id=run_id, model=plan.model)
    record = {
        "config": manifests.config_record(config),
        "plan": plan.as_dict(),
        "plan_sha256": plan.sha256,
        "plan_source": config.plan_source,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_units": len(units),
        "n_rows": len(table),
        "groups": groups,
        "metrics_run": config.metrics_run or run_id,
        "prefix_reuse": prefix_reuse,
        "last_session": {
            "units": n_done_now,
            "load_s": round(loaded - started, 3),
            "sweep_s": round(swept - loaded, 3),
            "units_per_s": round(n_done_now / max(swept - loaded, 1e-9), 3),
        },
        "pid": os.getpid(),
    }
    store.write_table(final, table, record)
    store.update_manifest(
        config.data_dir, run_id,
        lambda manifest: {**manifest, "sweeps": {**manifest.get("sweeps", {}), plan.name: record}},
    )  # fmt: skip
    shutil.rmtree(parts)
    return final


def _resume_ok(model: Any, prepared: PreparedTask) -> bool:
    """Whether restarting mid-network reproduces the clean logits (checked on one batch, from
    the residual its clean pass kept)."""
    from analyses.sweeps.prefix import resume_is_exact

    layer = model.info.n_layers // 2
    task_batch = prepared.batches[0]
    hooks = read_positions_hooks(task_batch.read_at, copies=1)
    residual = prepared.residuals[0][layer]
    return resume_is_exact(model, task_batch.batch, layer, residual=residual, fwd_hooks=hooks)
