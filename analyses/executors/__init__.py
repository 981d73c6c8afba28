"""Who computes a job's work items: this process (`local`, the default) or Ray actors (`ray`).

A job (a sweep, a sharded scan) is cut by its driver into items; an executor turns each item
into an outcome and the driver writes every part itself as outcomes come back. The job hands
the executor a picklable `Job`, whose `worker()` builds, in whichever process computes, the
`Worker` that computes items (it loads the job's model there). An executor is a context
manager:

    with executors.start(config, job) as executor:
        for item, outcome in executor.run(items):      # in completion order
            ...

`run(items, progress=, then=)`: a local worker may report progress inside an item
(`progress(n)`); `then(item, outcome)` returns items that became ready (they go first).

This module is torch-free (the CLI's `--help` reads its choices); the local executor builds the
worker in the driver's process, the Ray one (analyses.executors.ray_cluster) in every actor.
Sweeps (analyses.sweeps.work) and sharded scans (analyses.jobs.scan_work) both run on it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from probes.models import LoadedModel

from analyses.executors.options import EXECUTORS as EXECUTORS
from analyses.executors.options import ExecutorError as ExecutorError
from analyses.executors.options import ExecutorOptions as ExecutorOptions
from analyses.executors.options import check_options as check_options
from analyses.executors.options import preflight as preflight

Progress = Callable[[int], None]
Then = Callable[[Any, Any], Sequence[Any]]


class Worker(Protocol):
    """Computes items in one process; keeps what it loaded (a model, a prepared task)."""

    def compute(self, item: Any, progress: Progress | None = None) -> Any: ...


class Job(Protocol):
    """What every computing process needs (picklable: Ray ships it to each actor)."""

    def worker(self, model: LoadedModel | None = None) -> Worker:
        """The worker, built in the process that computes (`model`: one the caller loaded)."""
        ...


class Executor(Protocol):
    def layout(self) -> Any:
        """The first worker's `layout()` (what a sweep's driver cuts its plan by)."""
        ...

    def run(
        self, items: Sequence[Any], *, progress: Progress | None = None, then: Then | None = None
    ) -> Iterator[tuple[Any, Any]]: ...

    def record(self) -> dict[str, Any]:
        """What the manifest keeps about how the session ran."""
        ...


class LocalExecutor:
    """Every item in the driver's process, in order."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def layout(self) -> Any:
        return self.worker.layout()

    def run(
        self, items: Sequence[Any], *, progress: Progress | None = None, then: Then | None = None
    ) -> Iterator[tuple[Any, Any]]:
        queue = deque(items)
        while queue:
            item = queue.popleft()
            outcome = self.worker.compute(item, progress)
            yield item, outcome
            if then is not None:
                queue.extendleft(reversed(then(item, outcome)))

    def record(self) -> dict[str, Any]:
        return {"executor": "local", "workers": 1}


@contextmanager
def start(
    options: ExecutorOptions, job: Job, model: LoadedModel | None = None
) -> Iterator[Executor]:
    """The executor `options` ask for, started (its worker built here, or a Ray cluster joined
    and its actors created) and stopped again on leaving."""
    preflight(options)
    if options.executor == "ray":
        if model is not None:
            raise ExecutorError(
                "the ray executor's workers load the plan's model themselves; call without one"
            )
        from analyses.executors import ray_cluster

        with ray_cluster.start(options, job) as executor:
            yield executor
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or threads)
    try:
        yield LocalExecutor(job.worker(model))
    finally:
        torch.set_num_threads(threads)
