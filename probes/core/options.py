"""Choices that configs validate and the engine acts on, spelled once (torch-free, so configs
check them before anything heavy is imported)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from probes.core.errors import ConfigError

# Every config's and every verb's default model: a name in probes.models.REGISTRY.
DEFAULT_MODEL = "smollm2-135m"
ENGINE_PATHS = ("auto", "bridge", "fast")
# The dtypes a model may run in; every probe's sums accumulate in float32 or float64 regardless.
DTYPES = ("float32", "bfloat16", "float16")
# Every job's data directory (it holds runs/), and how every verb spells it: `--data`, with
# `--out`, the older name of some verbs, kept as an alias (metadata of the configs' data_dir
# fields, read by analyses/cli/fields.py; the verbs without a config use the same).
DEFAULT_DATA = Path("data")
DATA_FLAG, DATA_ALIASES, DATA_HELP = "--data", ("--out",), "data directory, holding runs/"
DATA_OPTION: Mapping[str, Any] = MappingProxyType(
    {"flag": DATA_FLAG, "aliases": DATA_ALIASES, "help": DATA_HELP}
)
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


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def check_positive(name: str, value: object) -> None:
    """A whole number ≥ 1 (bools are refused: True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")


def check_choices(name: str, values: tuple[str, ...], choices: tuple[str, ...]) -> None:
    """At least one value, each one of `choices`."""
    if not values:
        raise ConfigError(f"{name}: give at least one of {', '.join(choices)}")
    unknown = [value for value in values if value not in choices]
    if unknown:
        raise ConfigError(f"{name}: unknown {unknown}; choose from {', '.join(choices)}")
