"""What a run records about itself: one manifest builder for every job, and configs that
round-trip through it.

`build(kind, config, model=...)` gives the common record — kind, time, command line, model
provenance, the job's config, package versions, git commit, machine, pid — plus the job's own
sections. `config` is stored field by field as JSON values (paths as strings, tuples as lists),
and `config_from_record(ConfigClass, manifest["config"])` rebuilds an equal config, so a run can
be re-created from its manifest.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import subprocess
import sys
import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from probes.core.errors import HeadlabError

C = TypeVar("C")


class ManifestError(HeadlabError, ValueError):
    """A manifest's config does not fit the config class it is read into."""


PACKAGES = ("headlab", "torch", "transformers", "transformer-lens", "pandas", "pyarrow", "numpy")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(directory: Path | None = None) -> dict[str, Any]:
    """The commit of the headlab checkout (and whether it has uncommitted changes), if any."""
    directory = directory or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def machine() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "cpus": os.cpu_count()}


def build(kind: str, config: Any, *, model: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """The manifest of a `kind` run (scan, sweep, mask-retrieval, ...) made from `config`."""
    return {
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": model,
        "config": config_record(config),
        "versions": package_versions(),
        "git": git_commit(),
        "machine": machine(),
        "pid": os.getpid(),
        **sections,
    }


def config_record(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON values, field by field."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return {f.name: _to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_record(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _to_json(item) for key, item in value.items()}
    return value


def config_from_record(cls: type[C], record: dict[str, Any]) -> C:
    """Rebuild a config of class `cls` from `config_record`'s output (e.g. a manifest's
    "config"); field types guide the conversion back (lists to tuples, strings to paths)."""
    if not isinstance(record, dict):
        raise ManifestError(f"{cls.__name__}: expected a JSON object, got {type(record).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(record) - names)
    if unknown:
        raise ManifestError(f"{cls.__name__} has no field(s) {unknown}")
    values = {
        name: _from_json(hints[name], record[name], f"{cls.__name__}.{name}") for name in record
    }
    return cls(**values)


def _from_json(hint: Any, raw: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        return _from_json(options[0], raw, where) if len(options) == 1 else raw
    if hint is Path:
        return Path(raw)
    if origin is tuple:
        if not isinstance(raw, list):
            raise ManifestError(f"{where}: expected a list, got {raw!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], item, where) for item in raw)
        return tuple(_from_json(arg, item, where) for arg, item in zip(args, raw, strict=True))
    if origin is dict:
        value_type = args[1] if args else Any
        return {key: _from_json(value_type, item, where) for key, item in raw.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(raw, dict):
        return config_from_record(hint, raw)
    return raw
