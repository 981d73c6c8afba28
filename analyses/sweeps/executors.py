"""Who computes a sweep's items: this process (`local`, the default) or Ray actors (`ray`).

Either way the driver (analyses.sweeps.runner) cuts the plan into the same items
(analyses.sweeps.work), writes every part itself as results come back, and merges them; an
executor only turns items into rows. An executor is a context manager:

    with executors.start(config, model) as executor:
        layout = executor.layout()           # model info, provenance, chunk sizes
        for item, outcome in executor.run(items):   # in completion order
            ...

This module is torch-free (the CLI's `--help` reads its choices); the local executor loads the
model in the driver's process, the Ray one (analyses.sweeps.ray_executor) in every actor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from analyses.sweeps.runner import SweepConfig
    from analyses.sweeps.work import Item, Layout, Outcome
    from probes.models import LoadedModel

from analyses.sweeps.executor_options import EXECUTORS as EXECUTORS
from analyses.sweeps.executor_options import ExecutorError as ExecutorError
from analyses.sweeps.executor_options import check_options as check_options


class Executor(Protocol):
    def layout(self) -> Layout: ...

    def run(self, items: Sequence[Item]) -> Iterator[tuple[Item, Outcome]]: ...

    def record(self) -> dict[str, Any]:
        """What the manifest keeps about how the session ran."""
        ...


class LocalExecutor:
    """Every item in the driver's process, in order: what `headlab sweep` always did."""

    def __init__(self, config: SweepConfig, model: LoadedModel) -> None:
        from analyses.sweeps.work import Worker

        self.worker = Worker(config.plan, model, prefix_reuse=config.prefix_reuse)

    def layout(self) -> Layout:
        return self.worker.layout()

    def run(self, items: Sequence[Item]) -> Iterator[tuple[Item, Outcome]]:
        for item in items:
            yield item, self.worker.compute(item)

    def record(self) -> dict[str, Any]:
        return {"executor": "local", "workers": 1}


@contextmanager
def start(config: SweepConfig, model: LoadedModel | None = None) -> Iterator[Executor]:
    """The executor `config` asks for, started (a model loaded, or a Ray cluster joined and its
    actors created) and stopped again on leaving."""
    from analyses.sweeps.plan import PlanError

    plan = config.plan
    if config.executor == "ray":
        if model is not None:
            raise ExecutorError(
                "the ray executor's workers load the plan's model themselves; call without one"
            )
        from analyses.sweeps import ray_executor

        with ray_executor.start(config) as executor:
            yield executor
        return
    if model is None:
        from probes.models import load

        model = load(plan.model, device=config.device, dtype=config.dtype)
    elif model.info.name != plan.model:
        raise PlanError(f"the plan is for model {plan.model!r}, not {model.info.name!r}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        yield LocalExecutor(config, model)
    finally:
        torch.set_num_threads(threads)
