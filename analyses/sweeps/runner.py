"""The sweep job: run a plan's interventions on its tasks and merge the results into a run.

Resumable: every unit of work has a deterministic id (analyses.sweeps.plan.Unit.id). Finished units
are appended as small parquet parts, each written atomically and listing its unit ids in its
metadata, under runs/<run>/sweep-<name>.parts/. A rerun of the same command skips the listed
units, so a sweep killed at any moment (SIGKILL included) finishes with no row lost or doubled.
At the end the parts are merged into runs/<run>/sweep-<name>.parquet and the plan is recorded
in the run's manifest under "sweeps".

Who computes: the driver cuts the plan into items (analyses.sweeps.work: a task's clean
measures, chunks of units, attribution estimates), an executor (analyses.executors: this
process, or Ray actors across a cluster) turns each into rows, and the driver writes each as a
part as it comes back. The items and the passes inside them are the same on every executor, so
the merged table is too, bit for bit.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from analyses import executors
from analyses.results import locks, run_ids, store
from analyses.results import manifest as manifests
from analyses.sweeps.parts import PARTS_SUFFIX, done_units, merge, table_path, write_part
from analyses.sweeps.plan import PlanError, SweepPlan, expand, rank_heads
from analyses.sweeps.tasks import ForwardTask, Task, make_task
from analyses.sweeps.work import SweepJob, plan_items
from probes.core.errors import HeadlabError
from probes.core.options import DEFAULT_DATA, check_device, check_dtype
from probes.models import LoadedModel, ModelUnavailableError


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep plan runs: where its rows go (`data_dir`, `run_id`), which run its rankings
    read (`metrics_run`), the device, and whether to show progress."""

    # The CLI (analyses/cli/sweep.py) sets the fields without {"cli": False} from flags of the
    # same dest, so config_from_args builds this; the others come from the plan it reads.
    plan: SweepPlan = field(metadata={"cli": False})
    data_dir: Path = DEFAULT_DATA
    run_id: str | None = None  # the run to merge into; default: one named after the plan
    metrics_run: str | None = None  # where rankings read stored metrics; default: run_id
    device: str = "cpu"
    dtype: str = "float32"  # the model's; a sweep resumes only in the dtype it started in
    progress: bool = True
    plan_source: str = field(default="flags", metadata={"cli": False})
    # False runs every intervention as a full forward (benchmarks)
    prefix_reuse: bool = field(default=True, metadata={"cli": False})
    # torch intra-op threads per process that computes (None: torch's default locally, the
    # worker's CPUs on Ray). Float sums depend on it: equal threads give bit-equal tables.
    threads: int | None = None
    # Who computes the items (analyses.executors); the rest is for executor "ray" only.
    executor: str = "local"
    address: str | None = None  # join this Ray cluster (auto | HOST:PORT); None: start one
    workers: int | None = None  # Ray actors; None: as many as the cluster's CPUs (GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        check_device(self.device)
        check_dtype(self.dtype)
        executors.check_options(self)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], name: str) -> SweepConfig:
        """The config sweep `name` of a stored run ran with (several sweeps may share a run)."""
        sweeps = manifest.get("sweeps", {})
        if name not in sweeps:
            raise PlanError(f"the run holds no sweep {name!r}; it holds {sorted(sweeps)}")
        return manifests.config_from_record(cls, sweeps[name]["config"])


def default_run_id(plan: SweepPlan, data_dir: Path | None = None) -> str:
    """The run a plan merges into without --run: `<model>-sweep-<plan hash>` (the same plan,
    the same run, so a rerun resumes), or the longer id of older versions where `data_dir`
    holds a run of that name."""
    legacy = run_ids.legacy_sweep_run_id(plan.model, plan.sha256)
    if data_dir is not None and (store.runs_root(data_dir) / legacy).is_dir():
        return legacy
    return run_ids.sweep_run_id(plan.model, plan.sha256)


# --- the job ----------------------------------------------------------------------------------


def _open_run(config: SweepConfig, run_id: str, provenance: dict[str, Any]) -> Path:
    directory = store.run_dir(config.data_dir, run_id)
    if not directory.exists():
        manifest = manifests.build("sweep", config, model=provenance, n_rows=0)
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
    if marker.is_file():
        record = json.loads(marker.read_text())
        recorded, dtype = record.get("plan_sha256"), record.get("dtype", "float32")
    else:
        sweep = (
            store.read_manifest(config.data_dir, run_id).get("sweeps", {}).get(config.plan.name, {})
        )
        recorded, dtype = sweep.get("plan_sha256"), sweep.get("config", {}).get("dtype", "float32")
    if recorded not in (None, config.plan.sha256):
        raise PlanError(
            f"run {run_id!r} already has a sweep named {config.plan.name!r} from a different "
            "plan; give this plan another name"
        )
    if recorded is not None and dtype != config.dtype:  # chunks in two dtypes would not compare
        raise PlanError(
            f"sweep {config.plan.name!r} of run {run_id!r} ran in {dtype}; finish it with "
            f"--dtype {dtype}, or give this one another --name"
        )


def run(config: SweepConfig, model: LoadedModel | None = None) -> Path:
    """Run (or finish) the sweep described by `config`; return the merged table's path.

    `model` is loaded from the plan's model name unless given (e.g. a hand-built test model
    whose `info.name` is the plan's model).
    """
    plan = config.plan
    run_id = store.validate_run_id(config.run_id or default_run_id(plan, config.data_dir))
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
            from_plan = isinstance(error, PlanError | ModelUnavailableError)  # its model too
            if not from_plan or isinstance(error, executors.ExecutorError):
                raise  # a disk, device, lock or cluster error is not the plan's fault
            if config.plan_source in str(error) or config.plan_source == "command line":
                raise  # already named, or the flags are the plan: nothing to point to
            raise type(error)(f"{config.plan_source}: {error}") from error


def _metrics_reader(config: SweepConfig, run_id: str) -> Callable[[], tuple[pd.DataFrame, str]]:
    """The stored table that rankings read, and its run id; read once, when first asked."""
    source = config.metrics_run or run_id
    cached: list[tuple[pd.DataFrame, str]] = []

    def metrics() -> tuple[pd.DataFrame, str]:
        if not cached:
            try:
                cached.append((store.load_run(config.data_dir, source), source))
            except store.StoreError as error:
                flag = "--metrics-run" if config.metrics_run else "--metrics-run (default: --run)"
                raise PlanError(
                    f"the plan ranks heads by a stored run's metrics, read from {flag} "
                    f"{source!r}: {error}. Scan the model first (`headlab scan --model "
                    f"{config.plan.model}`) and pass that run's id"
                ) from None
        return cached[0]

    return metrics


def _run(
    config: SweepConfig, run_id: str, tasks: dict[str, Task], model: LoadedModel | None
) -> Path:
    plan = config.plan
    started = time.perf_counter()
    directory = store.run_dir(config.data_dir, run_id)
    parts = directory / f"sweep-{plan.name}{PARTS_SUFFIX}"
    final = table_path(directory, plan.name)
    if directory.exists():
        _check_same_plan(parts, config, run_id)
        if final.is_file() and not parts.exists():
            return final  # finished earlier
    metrics = _metrics_reader(config, run_id)
    rankings = [t.ranking for t in plan.top_k] + [s.top for s in plan.strength if s.top]
    for ranking in rankings:  # the ranked metric exists: checked before the model loads
        table, source = metrics()
        rank_heads(table, ranking, source)

    job = SweepJob(plan, config.device, config.dtype, config.prefix_reuse)
    with executors.start(config, job, model) as executor:
        layout = executor.layout()
        loaded = time.perf_counter()
        # The whole plan is expanded and checked before the run directory exists.
        units, groups = expand(plan, layout.info, metrics)
        for name, task in tasks.items():
            if not isinstance(task, ForwardTask) and (
                plan.attribution or any(u.kind == "mean" for u in units if u.task == name)
            ):
                raise PlanError(f"task {name!r} is not scored from one forward pass: it supports "
                                "neither mean ablation nor attribution patching")  # fmt: skip
        directory = _open_run(config, run_id, layout.provenance)
        parts.mkdir(parents=True, exist_ok=True)
        locks.remove_leftovers(parts)  # temporaries of a writer killed mid-part
        store.write_json(parts / "plan.json", {"plan_sha256": plan.sha256,
                                               "plan": plan.as_dict(),
                                               "dtype": config.dtype})  # fmt: skip
        done = done_units(parts)
        items = plan_items(units, list(tasks), plan.attribution, layout, done)
        n_todo = sum(1 for unit in units if unit.id not in done)
        session: dict[str, Any] = {"units": 0, "prefix_reuse": {}, "workers": set(),
                                   "threads": set()}  # fmt: skip
        with tqdm(total=n_todo, unit="unit", desc=f"sweep {plan.name}",
                  disable=not config.progress) as bar:  # fmt: skip
            for item, outcome in executor.run(items):
                write_part(parts, outcome.rows, item.ids)
                bar.update(len(item.units))
                session["units"] += len(item.units)
                session["workers"].add(outcome.worker)
                session["threads"].add(outcome.threads)
                if outcome.prefix_reuse is not None:
                    session["prefix_reuse"][item.task] = outcome.prefix_reuse
        how = executor.record()
    swept = time.perf_counter()
    attribution_ids = [f"{name}|attribution:{mode}" for name in tasks for mode in plan.attribution]
    table = merge(parts, [u.id for u in units] + attribution_ids + [f"{n}|clean" for n in tasks])
    table = table.assign(run_id=run_id, model=plan.model)
    n_done_now = session["units"]
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
        "prefix_reuse": session["prefix_reuse"],
        "last_session": {
            "units": n_done_now,
            "load_s": round(loaded - started, 3),
            "sweep_s": round(swept - loaded, 3),
            "units_per_s": round(n_done_now / max(swept - loaded, 1e-9), 3),
            **how,
            "worker_processes": sorted(session["workers"]),
            "torch_threads": sorted(session["threads"]),
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
