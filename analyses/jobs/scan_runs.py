"""Scans of several models, each cut into shards, on an executor: resumable and exact.

    headlab scan --model A --model B --shards 3 [--executor ray --workers 4]

Each model's scan is a run of its own (one model's provenance per manifest, as the results
schema, `headlab show` and the dashboard expect); with `--run-id X` and several models the runs
are X-<model>. The driver (this module) checks everything first — every config, probe
parameter, model name, the prompts, `--shards` against the batches they make, the output
directory, the run ids and their locks, Ray's presence and address — then cuts each model into
items (analyses.jobs.scan_work: shards, generate) and hands them to an executor
(analyses.executors: this process or Ray actors). It writes every part itself, atomically, as
it comes back, under

    DATA/runs/.scan-parts/<run_id>/settings.json      what the parts were computed with
    DATA/runs/.scan-parts/<run_id>/part-*.pt           one per finished item

and when a model's parts are all there, a merge item folds them (in batch order: the rows
equal the unsharded scan's bit for bit) and the driver writes the run and removes its parts.
Resumable: kill the command at any moment and rerun it; a run id given or not, the rerun finds
the parts of the same settings and computes only the missing items. A rerun whose settings
differ from the parts' (`--max-tokens`, the prompts, `--shards`, ...) is refused, naming them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from analyses import executors
from analyses.jobs.scan import (
    DEFAULT_PROBES,
    ScanConfig,
    check_image_scan,
    check_writable,
    probe_params,
    prompt_suite,
)
from analyses.jobs.scan_parts import (
    SETTINGS_FILE,
    parts_root,
    read_settings,
    settings,
    tidy,
    unfinished,
)
from analyses.results import locks, store
from analyses.results import manifest as manifests
from analyses.results import run_ids as naming
from probes.core.errors import ConfigError
from probes.core.probe import GenerativeProbe
from probes.core.shards import Shard, n_batches, shard_prompts

if TYPE_CHECKING:
    from analyses.jobs.scan_work import ScanItem, ScanOutcome
    from probes.inputs.prompts import PromptSuite
    from probes.models import LoadedModel

PER_MODEL = ("model", "run_id")  # what differs between the models of one scan


@dataclass
class ModelRun:
    """One model's scan in this session: its run, its parts, what is left to compute."""

    index: int
    config: ScanConfig
    run_id: str
    parts: Path
    names: list[str]  # every part file, in fold order
    todo: list[ScanItem]
    settings: dict[str, Any]
    written: bool = False  # the run existed already (a session killed before tidying up)
    session: dict[str, Any] = field(default_factory=lambda: dict(
        parts=0, load_s=0.0, compute_s=0.0, workers=set(), threads=set()))  # fmt: skip

    def finished(self) -> list[str]:
        return [name for name in self.names if (self.parts / name).is_file()]

    def merge_item(self) -> ScanItem:
        from analyses.jobs.scan_work import ScanItem

        parts = tuple((name, (self.parts / name).read_bytes()) for name in self.names)
        return ScanItem(self.index, "merge", parts=parts)


def run_one(
    config: ScanConfig, model: LoadedModel | None = None, suite: PromptSuite | None = None
) -> Path:
    """Run the scan described by `config`; return the new run directory. Everything is
    checked — config, probe parameters, prompts, output directory, run id — before the model
    loads. `model` (already loaded, named `config.model`) and `suite` (instead of
    `config.prompts`) serve Python callers."""
    (directory,) = run([config], model, suite)
    return directory


def run(
    configs: Sequence[ScanConfig],
    model: LoadedModel | None = None,
    suite: PromptSuite | None = None,
) -> list[Path]:
    """Scan every config's model (sharded, on the configs' executor); return the run
    directories in the configs' order. See the module docstring."""
    started = time.perf_counter()
    configs = list(configs)
    first = _check_together(configs, model)
    classes, _ = probe_params(first)  # unknown probes and bad parameters fail first
    suite = suite if suite is not None else prompt_suite(first)
    if suite.has_images:
        for config in configs:
            check_image_scan(config)
    streaming = any(not issubclass(cls, GenerativeProbe) for cls in classes)
    _check_shards(first, suite, streaming)
    if model is None:
        from probes.models import check_name

        for config in configs:
            check_name(config.model)
    runs = store.runs_root(first.data_dir)
    check_writable(runs)
    executors.preflight(first)
    generative = any(issubclass(cls, GenerativeProbe) for cls in classes)
    with ExitStack() as stack:
        plans: list[ModelRun] = []
        for index, config in enumerate(configs):
            run_id = config.run_id or unfinished(config, suite)
            if run_id is None:  # a new id no other process holds (two scans in one second)
                base = naming.scan_run_id(config.model, config.probes, DEFAULT_PROBES)
                run_id = stack.enter_context(locks.claim_new(runs, store.validate_run_id(base)))
            else:
                if run_id in [plan.run_id for plan in plans]:
                    raise ConfigError(f"two models would be written to run {run_id!r}")
                stack.enter_context(locks.writing(runs, run_id, f"scan run {run_id!r}"))
            plans.append(_plan(index, config, run_id, suite, streaming, generative))
        try:
            return _compute(plans, suite, model, started)
        finally:
            for plan in plans:  # a session that finished nothing leaves nothing behind
                if plan.parts.is_dir() and not plan.finished():
                    shutil.rmtree(plan.parts, ignore_errors=True)
            tidy(parts_root(first.data_dir))


def _check_together(configs: Sequence[ScanConfig], model: LoadedModel | None) -> ScanConfig:
    if not configs:
        raise ConfigError("model: give at least one model")
    first = configs[0]
    models = [config.model for config in configs]
    twice = sorted({name for name in models if models.count(name) > 1})
    if twice:
        raise ConfigError(f"--model {twice[0]} given more than once")

    def shared(config: ScanConfig) -> dict[str, Any]:
        record = manifests.config_record(config)
        return {name: value for name, value in record.items() if name not in PER_MODEL}

    for config in configs[1:]:
        if shared(config) != shared(first):
            raise ConfigError("the models of one scan share every setting but --model")
    if model is not None and len(configs) > 1:
        raise ConfigError("a loaded model is given: scan one model with it")
    if model is not None and model.info.name != first.model:
        raise ConfigError(
            f"the scan is of model {first.model!r}, but the model given is {model.info.name!r}"
        )
    return first


def _check_shards(config: ScanConfig, suite: PromptSuite, streaming: bool) -> None:
    if config.shards == 1:
        return
    if not streaming:
        raise ConfigError(
            f"--shards {config.shards}: probes {', '.join(config.probes)} decode their own "
            "samples and read no prompts in forward passes; there is nothing to shard"
        )
    batches = n_batches(len(suite), config.batch_size)
    if config.shards > batches:
        raise ConfigError(
            f"--shards {config.shards} is more than the {batches} batches the {len(suite)} "
            f"prompts make with --batch-size {config.batch_size}; give at most {batches}"
        )


def _flag(name: str) -> str:
    return {"prompts_sha256": "--prompts (their content)", "probe_params": "--param",
            "data_dir": "--data"}.get(name, "--" + name.replace("_", "-"))  # fmt: skip


def _plan(
    index: int,
    config: ScanConfig,
    run_id: str,
    suite: PromptSuite,
    streaming: bool,
    generative: bool,
) -> ModelRun:
    from analyses.jobs.scan_work import ScanItem, part_name

    parts = parts_root(config.data_dir) / store.validate_run_id(run_id)
    wanted, recorded = settings(config, suite), read_settings(parts)
    if recorded is not None and recorded != wanted:
        differ = sorted(k for k in wanted.keys() | recorded.keys()
                        if wanted.get(k) != recorded.get(k))  # fmt: skip
        raise ConfigError(
            f"run {run_id!r} has finished shards of a scan with other settings "
            f"({', '.join(_flag(k) for k in differ)} differ; see {parts / SETTINGS_FILE}): "
            "rerun with the same settings to finish it, or give another --run-id"
        )
    items = [ScanItem(index, "shard", k) for k in range(config.shards)] if streaming else []
    items += [ScanItem(index, "generate")] if generative else []
    plan = ModelRun(index, config, run_id, parts, [part_name(i, config.shards) for i in items],
                    [], wanted)  # fmt: skip
    if store.run_dir(config.data_dir, run_id).exists():
        if recorded is None:  # refused before any model loads
            raise store.StoreError(
                f"run {run_id!r} already exists under {store.runs_root(config.data_dir)}; "
                "pick another --run-id"
            )
        plan.written = True  # killed after writing the run, before removing its parts
        shutil.rmtree(parts)
        return plan
    done = set(plan.finished())
    plan.todo = [item for item, name in zip(items, plan.names, strict=True) if name not in done]
    return plan


def _compute(
    plans: list[ModelRun], suite: PromptSuite, model: LoadedModel | None, started: float
) -> list[Path]:
    from analyses.jobs.scan_work import ScanJob

    first = plans[0].config
    paths = {plan.index: store.run_dir(first.data_dir, plan.run_id) for plan in plans
             if plan.written}  # fmt: skip
    open_plans = [plan for plan in plans if not plan.written]
    items = [plan.merge_item() for plan in open_plans if not plan.todo]
    items += [item for plan in open_plans for item in plan.todo]
    if not items:
        return [paths[plan.index] for plan in plans]

    def prompts_of(item: ScanItem) -> int:
        if item.kind != "shard":
            return 0
        return shard_prompts(len(suite), first.batch_size, Shard(item.shard, first.shards))

    left = sum(prompts_of(item) for item in items)
    desc = f"scan {first.model}" if len(plans) == 1 else f"scan {len(plans)} models"
    total = len(open_plans) * len(suite)
    bar = _Bar(total=total, initial=total - left, unit="prompt", desc=desc,
               disable=not first.progress)  # fmt: skip
    ticked = [0]

    def tick(n: int) -> None:
        ticked[0] += n
        bar.update(n)

    def then(item: ScanItem, outcome: ScanOutcome) -> list[ScanItem]:
        plan = plans[item.model]
        ready = item.kind != "merge" and len(plan.finished()) == len(plan.names)
        return [plan.merge_item()] if ready else []

    job = ScanJob(tuple(plan.config for plan in plans), suite)
    with executors.start(first, job, model) as executor, bar:
        for item, outcome in executor.run(items, progress=tick, then=then):
            plan = plans[item.model]
            _note(plan, outcome)
            if item.kind == "merge":
                paths[item.model] = _write_run(plan, outcome, suite, started, executor.record())
            else:
                _write_part(plan, item, outcome)
                bar.update(max(0, prompts_of(item) - ticked[0]))
            ticked[0] = 0
    return [paths[plan.index] for plan in plans]


class _Bar:
    """One tqdm bar for the whole scan's suite prompts, shown once the first of them are done
    (an error of the first item, such as a prompt too long for the model, stays one line; a
    scan that reads no suite prompt shows none)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.bar: Any = None

    def update(self, n: int) -> None:
        if n <= 0:  # no prompt done (a decoding item: its probe shows a bar of its own)
            return
        if self.bar is None:
            self.bar = tqdm(**self.options)
        self.bar.update(n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _note(plan: ModelRun, outcome: ScanOutcome) -> None:
    session = plan.session
    session["load_s"] += outcome.load_s
    session["compute_s"] += outcome.compute_s
    session["workers"].add(outcome.worker)
    session["threads"].add(outcome.threads)


def _write_part(plan: ModelRun, item: ScanItem, outcome: ScanOutcome) -> None:
    from analyses.jobs.scan_work import part_name

    plan.parts.mkdir(parents=True, exist_ok=True)
    locks.remove_leftovers(plan.parts)  # temporaries of a writer killed mid-part
    if not (plan.parts / SETTINGS_FILE).is_file() or not plan.finished():
        store.write_json(plan.parts / SETTINGS_FILE, plan.settings)
    path = plan.parts / part_name(item, plan.config.shards)
    store.write_atomically(path, lambda temporary: Path(temporary).write_bytes(outcome.payload))
    plan.session["parts"] += 1


def _write_run(
    plan: ModelRun, outcome: ScanOutcome, suite: PromptSuite, started: float, how: dict[str, Any]
) -> Path:
    config, result, session = plan.config, outcome.result, plan.session
    if result is None:
        raise RuntimeError("a merge item came back without its result")
    manifest = manifests.build(
        "scan",
        config,
        model=outcome.provenance,
        prompts={
            "name": suite.name,
            "source": suite.source,
            "sha256": suite.sha256,
            "n_prompts": len(suite),
            "max_tokens": config.max_tokens,
            "prompt_ids": [prompt.id for prompt in suite.prompts],
        },
        probes=result.probes,
        seed=config.seed,
        timings={
            "load_s": round(session["load_s"], 3),
            "scan_s": round(session["compute_s"], 3),
            "total_s": round(time.perf_counter() - started, 3),
        },
        n_rows=len(result.rows),
        shards={
            "count": config.shards,
            "parts": len(plan.names),
            "parts_this_session": session["parts"],
            **how,
            "worker_processes": sorted(session["workers"]),
            "torch_threads": sorted(session["threads"]),
        },
    )
    path = store.write_run(config.data_dir, plan.run_id, result.rows, manifest, result.side_tables)
    shutil.rmtree(plan.parts, ignore_errors=True)
    return path


def run_ids(models: Sequence[str], run_id: str | None) -> list[str | None]:
    """The run id of each model's run: `run_id` for one model, `run_id`-<model> for several
    (None: each gets a new one, or resumes its unfinished scan)."""
    if run_id is None or len(models) == 1:
        return [run_id] * len(models)
    return [f"{run_id}-{naming.model_part(model)}" for model in models]
