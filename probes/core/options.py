"""Choices that configs validate and the engine acts on, spelled once (torch-free, so configs
check them before anything heavy is imported)."""

from __future__ import annotations

import re

from probes.core.errors import ConfigError

ENGINE_PATHS = ("auto", "bridge", "fast")
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_engine_path(path: str) -> str:
    if path not in ENGINE_PATHS:
        raise ConfigError(f"path must be one of {ENGINE_PATHS}, got {path!r}")
    return path


def check_device(device: str) -> str:
    """cpu, cuda, cuda:N or mps; whether the machine has it is checked when the model loads."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    return device
