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

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from probes.core.errors import ConfigError

if TYPE_CHECKING:
    from analyses.sweeps.runner import SweepConfig
    from analyses.sweeps.work import Item, Layout, Outcome
    from probes.models import LoadedModel

EXECUTORS = ("local", "ray")
RAY_ONLY = ("address", "workers", "cpus_per_worker", "gpus_per_worker")


class ExecutorError(ConfigError):
    """An executor cannot start or lost every worker; the message names the flag to change."""


class Executor(Protocol):
    def layout(self) -> Layout: ...

    def run(self, items: Sequence[Item]) -> Iterator[tuple[Item, Outcome]]: ...

    def record(self) -> dict[str, Any]:
        """What the manifest keeps about how the session ran."""
        ...


def check_options(config: SweepConfig) -> None:
    """The executor fields of a sweep config, checked when it is built (before any model
    loads); messages start with the field name, which the CLI turns into the flag."""
    if config.executor not in EXECUTORS:
        choices = ", ".join(EXECUTORS)
        raise ConfigError(f"executor must be one of {choices}, got {config.executor!r}")
    threads = config.threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):  # fmt: skip
        raise ConfigError(f"threads must be a whole number ≥ 1, got {threads!r}")
    if config.executor == "local":
        defaults = {"address": None, "workers": None, "cpus_per_worker": 1.0,
                    "gpus_per_worker": 0.0}  # fmt: skip
        for name in RAY_ONLY:
            if getattr(config, name) != defaults[name]:
                raise ConfigError(f"{name} applies to the ray executor only (executor 'local')")
        return
    workers = config.workers
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):  # fmt: skip
        raise ConfigError(f"workers must be a whole number ≥ 1, got {workers!r}")
    for name in ("cpus_per_worker", "gpus_per_worker"):
        value = getattr(config, name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a number ≥ 0, got {value!r}")
    if config.cpus_per_worker == 0:
        raise ConfigError("cpus_per_worker must be more than 0 (a worker runs on CPUs too)")
    if config.address is not None:
        parse_address(config.address)
    if config.gpus_per_worker > 0 and config.device == "cpu":
        raise ConfigError("gpus_per_worker gives each worker a GPU: use it with --device cuda")
    if config.gpus_per_worker == 0 and config.device != "cpu":
        raise ConfigError(
            f"device {config.device!r} with the ray executor needs --gpus-per-worker > 0 "
            "(Ray hides the GPUs from workers that ask for none)"
        )


def parse_address(address: str) -> tuple[str, int] | None:
    """None for `auto`, else (host, port) of HOST:PORT."""
    if address == "auto":
        return None
    host, colon, port = address.rpartition(":")
    if colon and host and port.isdigit() and 1 <= int(port) <= 65535:
        return host.strip("[]"), int(port)
    raise ConfigError(f"address must be auto or HOST:PORT (e.g. 10.0.0.1:6379), got {address!r}")


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
