"""The Ray executor: a job's items computed by Ray actors, one per worker slot.

Each actor builds the job's worker once (`RayWorker`, around the job's `Worker`: a sweep's
loads the plan's model, a scan's the model of the items it gets) and pulls items from the
driver, which keeps `IN_FLIGHT` items queued per actor so none waits. Actors return outcomes;
the driver alone writes the parts, so the data directory lives on the driver's machine only and
a worker node needs no shared filesystem.

Faults: an actor whose process dies is restarted (it reloads the model) and the item it was
running is retried on it (`max_restarts`, `max_task_retries`). An actor that is gone for good
hands its items back to the queue for the others; so does an actor whose node stopped (a
raylet gone: Ray would keep its items waiting for a restart that may never find room, so the
driver, which checks the nodes every `NODE_CHECK_S` while it waits, kills it and moves on). The
run fails, keeping every finished part, only when no actor is left. A killed driver takes a
cluster it started with it; rerunning the command resumes from the parts.

Without `address`, a local cluster starts with the command (`ray.init(address="local")`: never
someone else's cluster) and stops with it. With `address` (auto or HOST:PORT) the job joins a
running cluster (`ray start --head` / `ray start --address`; every node needs the same headlab
install and model cache). A process already connected to Ray (a notebook that called
`ray.init`) keeps its connection and `address` is not used. Ray is imported here only, when a
ray job starts.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from analyses.executors.options import ExecutorError, ExecutorOptions, check_reachable
from probes.core.errors import HeadlabError

if TYPE_CHECKING:
    from analyses.executors import Job, Progress, Then

ACTOR_RESTARTS = 4  # a worker process that dies is restarted this often ...
TASK_RETRIES = 4  # ... and the item it was on retried (items are pure: a retry is safe)
IN_FLIGHT = 2  # items queued per actor
OBJECT_STORE_BYTES = 256 * 2**20  # rows come back inline; a local cluster's store holds little
NODE_CHECK_S = 1.0  # how often the driver looks for stopped nodes while it waits


class RayWorker:
    """The actor: the job's worker, built in the actor's process."""

    def __init__(self, job: Job, threads: int) -> None:
        self.error: HeadlabError | None = None
        try:
            import torch

            torch.set_num_threads(threads)
            self.worker: Any = job.worker()
        except HeadlabError as error:  # handed to the driver by the first call
            self.error = error

    def layout(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.worker.layout()

    def compute(self, item: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.worker.compute(item)

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    def __init__(self, config: ExecutorOptions, job: Job, where: str) -> None:
        import ray

        cpus, gpus = config.cpus_per_worker, config.gpus_per_worker
        total = ray.cluster_resources()
        have_cpus, have_gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        fit = int(have_cpus // cpus if not gpus else min(have_cpus // cpus, have_gpus // gpus))
        self.n_workers = config.workers or fit
        if not 1 <= self.n_workers <= fit:
            raise ExecutorError(
                f"--workers {self.n_workers} with --cpus-per-worker {cpus:g} and "
                f"--gpus-per-worker {gpus:g} needs {self.n_workers * cpus:g} CPUs and "
                f"{self.n_workers * gpus:g} GPUs; {where} has {have_cpus:g} and {have_gpus:g}"
            )
        actor = ray.remote(RayWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=ACTOR_RESTARTS,
            max_task_retries=TASK_RETRIES,
        )  # fmt: skip
        threads = config.threads or max(1, int(cpus))
        self.actors: list[Any] = [  # ActorHandles (mypy does not see their .remote)
            actor.remote(job, threads) for _ in range(self.n_workers)
        ]
        self.where = where
        self.nodes: list[str] = ray.get([worker.node.remote() for worker in self.actors])
        self.lost_nodes: set[str] = set()

    def layout(self) -> Any:
        return _get(self.actors[0].layout.remote())

    def run(
        self, items: Sequence[Any], *, progress: Progress | None = None, then: Then | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """Items in completion order (`progress` is not reported from actors; `then`'s items
        go to the front of the queue)."""
        import ray
        from ray.exceptions import RayActorError

        queue = deque(items)
        live = set(range(len(self.actors)))
        pending: dict[Any, tuple[int, Any]] = {}

        def fill() -> None:
            busy = [index for index, _ in pending.values()]
            for index in sorted(live):
                for _ in range(IN_FLIGHT - busy.count(index)):
                    if queue:
                        item = queue.popleft()
                        pending[self.actors[index].compute.remote(item)] = (index, item)

        def drop(index: int, why: str) -> None:
            """Actor `index` is gone: its items go back to the queue, in order."""
            live.discard(index)
            mine = [ref for ref, (owner, _) in pending.items() if owner == index]
            queue.extendleft(reversed([pending.pop(ref)[1] for ref in mine]))
            if not live:
                raise ExecutorError(
                    f"every Ray worker died ({self.where}); finished parts are kept, rerun to "
                    f"resume. Last: {why}"
                )

        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=NODE_CHECK_S)
            if not ready:
                for index in self._on_stopped_nodes(live):
                    ray.kill(self.actors[index], no_restart=True)
                    drop(index, f"its node {self.nodes[index][:12]} stopped")
                fill()
                continue
            (ref,) = ready
            index, item = pending.pop(ref)
            try:
                outcome = _get(ref)
            except RayActorError as error:  # restarts used up: the others take its items
                queue.appendleft(item)
                drop(index, _first_line(error))
            else:
                yield item, outcome
                if then is not None:
                    queue.extendleft(reversed(then(item, outcome)))
            fill()

    def _on_stopped_nodes(self, live: set[int]) -> list[int]:
        """The live actors whose node the cluster no longer has alive."""
        import ray

        dead = {node["NodeID"] for node in ray.nodes() if not node["Alive"]}
        self.lost_nodes |= dead & set(self.nodes)
        return sorted(index for index in live if self.nodes[index] in dead)

    def record(self) -> dict[str, Any]:
        lost = {"lost_nodes": len(self.lost_nodes)} if self.lost_nodes else {}
        return {"executor": "ray", "workers": self.n_workers, "cluster": self.where, **lost}


def _get(ref: Any) -> Any:
    """`ray.get`, with a headlab error raised in an actor re-raised as itself."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, HeadlabError):
            raise error.cause from None
        raise


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


AUTH_HINT = (
    "the cluster wants Ray's auth token (Ray turns token authentication on when the head has "
    "~/.ray/auth_token): export RAY_AUTH_MODE=token, with the head's ~/.ray/auth_token on this "
    "machine or in RAY_AUTH_TOKEN"
)


def _join(address: str, quiet: dict[str, Any]) -> None:
    """`ray.init(address)`, with Ray's retry warnings kept off the terminal and a failure as one
    line (a refused auth token named as such)."""
    import ray
    from ray.exceptions import AuthenticationError

    with tempfile.TemporaryFile(mode="w+") as said:
        try:
            with _stderr_to(said):
                ray.init(address=address, **quiet)
        except (ConnectionError, AuthenticationError) as error:
            said.seek(0)
            if isinstance(error, AuthenticationError) or "InvalidAuthToken" in said.read():
                raise ExecutorError(f"--address {address}: {AUTH_HINT}") from None
            raise ExecutorError(
                f"--address {address}: {_first_line(error).split('. ')[0]}; start one "
                "with `ray start --head --port=PORT` or leave --address out for a local cluster"
            ) from None


@contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """File descriptor 2 (where Ray's C++ core logs) into `file` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def start(config: ExecutorOptions, job: Job) -> Iterator[RayExecutor]:
    """Join (or start) the cluster, create the actors; disconnect (or stop it) on leaving."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    owned = not ray.is_initialized()
    if not owned:
        where = "the Ray cluster this process is connected to"
    elif config.address is None:
        cpus = config.cpus_per_worker * (config.workers or os.cpu_count() or 1)
        ray.init(
            address="local", num_cpus=max(1, math.ceil(cpus)),
            num_gpus=None if config.gpus_per_worker else 0, include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES, **quiet,
        )  # fmt: skip
        where = "the local Ray cluster"
    else:
        check_reachable(config.address)
        _join(config.address, quiet)
        where = f"the Ray cluster at {config.address}"
    try:
        yield RayExecutor(config, job, where)
    finally:
        if owned:
            ray.shutdown()
