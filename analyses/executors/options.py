"""The executor options of a sweep or scan (`--executor`, `--address`, `--workers`, ...) and
their checks, torch- and ray-free: the CLI's choices, the configs' validation and both
executors (analyses.executors, analyses.executors.ray_cluster) read them from here."""

from __future__ import annotations

import importlib.util
import math
import socket
from typing import Protocol

from probes.core.errors import ConfigError

EXECUTORS = ("local", "ray")
RAY_ONLY = ("address", "workers", "cpus_per_worker", "gpus_per_worker")


class ExecutorError(ConfigError):
    """An executor cannot start or lost every worker; the message names the flag to change."""


class ExecutorOptions(Protocol):
    """The fields a job's config has for its executor (SweepConfig, ScanConfig)."""

    @property
    def executor(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def workers(self) -> int | None: ...
    @property
    def cpus_per_worker(self) -> float: ...
    @property
    def gpus_per_worker(self) -> float: ...
    @property
    def threads(self) -> int | None: ...
    @property
    def device(self) -> str: ...


def check_options(config: ExecutorOptions) -> None:
    """The executor fields of a config, checked when it is built (before any model loads);
    messages start with the field name, which the CLI turns into the flag."""
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


def preflight(config: ExecutorOptions) -> None:
    """What only this machine can tell, checked before any work starts: Ray is installed, and
    an address answers (Ray itself would retry for minutes)."""
    if config.executor != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise ExecutorError(
            "--executor ray needs Ray, which is not installed here (`make setup` installs the "
            "pinned ray==2.60.0); use --executor local"
        )
    if config.address is not None:
        check_reachable(config.address)


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Refuse at once an address nothing answers at (Ray itself would retry for minutes)."""
    host_port = parse_address(address)
    if host_port is None:
        return
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ExecutorError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head --port=PORT` or leave --address out for a local cluster"
        ) from None
