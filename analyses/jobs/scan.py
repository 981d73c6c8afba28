"""The scan job: load a model, stream the chosen probes over a prompt suite, store the run.

`ScanConfig` is what one model's scan runs with (every field is a flag of `headlab scan`);
`table` computes the rows in memory. Writing runs is analyses.jobs.scan_runs (`run_one`, and
`run`: several models, shards of the batches, the local or Ray executor, resumable), which
builds on this module and never the other way round.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses import executors
from analyses.results import manifest as manifests
from analyses.results import store
from probes.core.errors import ConfigError, HeadlabError
from probes.core.options import (
    DATA_OPTION,
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DTYPES,
    ENGINE_PATHS,
    check_device,
    check_dtype,
    check_engine_path,
    check_positive,
)

if TYPE_CHECKING:
    import pandas as pd

    from probes.core.probe import Probe
    from probes.core.types import ProbeParams
    from probes.inputs.prompts import PromptSuite
    from probes.models import LoadedModel

# The streaming probes: one fast-path pass over the prompts (+ a short one for the detectors'
# repeated random tokens); top_keys keeps the first prompt's top keys per query for the token
# view (~1 MB). Retrieval (generation) and divergence (two passes) are opt-in.
DEFAULT_PROBES = (
    "sink",
    "attention_stats",
    "future_attention",
    "pattern_class",
    "detectors",
    "top_keys",
)


class OutputNotWritableError(HeadlabError, RuntimeError):
    """The output directory cannot be written; checked before any model work starts."""


@dataclass(frozen=True)
class ScanConfig:
    """What `headlab scan` runs — every field is a flag of the same name — checked when built;
    recorded in the run's manifest and rebuilt from it by `from_manifest`."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "registry name (see `headlab models`), Hugging Face id, or local dir"},
    )
    probes: tuple[str, ...] = field(
        default=DEFAULT_PROBES,
        metadata={"help": "probe families; see `headlab probes`"},
    )
    prompts: Path | None = field(
        default=None,
        metadata={
            "help": 'JSONL file, one {"text": ..., "id": ...} per line (image prompts add '
            '"image": a file relative to the JSONL\'s directory, and the text holds <image> once); '
            "none = prose from the Python standard library's documentation"
        },
    )
    max_tokens: int | None = field(
        default=256,
        metadata={"help": "truncate each prompt to N tokens (BOS included); none = no truncation"},
    )
    batch_size: int = field(default=4, metadata={"help": "prompts per forward pass"})
    data_dir: Path = field(default=DEFAULT_DATA, metadata=DATA_OPTION)
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N, mps"})
    dtype: str = field(
        default="float32",
        metadata={"choices": DTYPES, "help": "weights and activations (sums stay float32/64)"},
    )
    seed: int = field(default=0, metadata={"help": "torch seed, set before the model loads"})
    run_id: str | None = field(
        default=None, metadata={"help": "name of the run; none = MODEL-PROBES-YYYYMMDD-HHMMSS"}
    )
    progress: bool = field(
        default=True, metadata={"flag": "--quiet", "invert": True, "help": "no progress bar"}
    )
    path: str = field(
        default="auto",
        metadata={
            "choices": ENGINE_PATHS,
            "help": "engine path: 'fast' computes exact pattern rows from queries and keys in "
            "chunks beside the model's own attention; 'bridge' uses TransformerLens hooks on "
            "whole patterns; 'auto' takes the fast path when every selected probe allows it",
        },
    )
    probe_params: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"cli": False},  # the CLI's --param PROBE.NAME=VALUE
    )
    shards: int = field(
        default=1,
        metadata={
            "help": "cut each pass's batches into N contiguous shards, each computed as one "
            "work item and kept as a part file: a rerun of the same command resumes from the "
            "finished shards; the rows equal the unsharded scan's bit for bit"
        },
    )
    threads: int | None = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "torch threads per computing process (none: torch's own locally, "
            "--cpus-per-worker on Ray); equal threads give bit-equal rows",
        },
    )
    executor: str = field(
        default="local",
        metadata={
            "choices": executors.EXECUTORS,
            "help": "who computes the shards: this process (local) or Ray actors (ray)",
        },
    )
    address: str | None = field(
        default=None,
        metadata={
            "metavar": "auto|HOST:PORT",
            "help": "ray: join this running cluster (none: start a local one for the command)",
        },
    )
    workers: int | None = field(
        default=None,
        metadata={"metavar": "N", "help": "ray: worker actors (none: as many as fit)"},
    )
    cpus_per_worker: float = field(
        default=1.0, metadata={"metavar": "C", "help": "ray: CPUs (and torch threads) per worker"}
    )
    gpus_per_worker: float = field(
        default=0.0, metadata={"metavar": "G", "help": "ray: GPUs per worker, with --device cuda"}
    )

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size)
        check_positive("shards", self.shards)
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(
                f"max_tokens must be at least 2 (BOS + one token), got {self.max_tokens}"
            )
        if not self.probes:
            raise ConfigError("probes: give at least one probe name")
        twice = sorted({name for name in self.probes if self.probes.count(name) > 1})
        if twice:
            raise ConfigError(f"probes: {twice} given more than once")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (0 <= self.seed < 2**63)
        ):
            raise ConfigError(f"seed must be a whole number in [0, 2^63), got {self.seed!r}")
        if self.run_id == "latest":
            raise ConfigError("run id 'latest' is reserved: it names the newest run")
        check_engine_path(self.path)
        check_device(self.device)
        check_dtype(self.dtype)
        executors.check_options(self)
        if self.run_id is not None:
            store.validate_run_id(self.run_id)
        unselected = sorted(set(self.probe_params) - set(self.probes))
        if unselected:
            raise ConfigError(
                f"parameters given for probe(s) {unselected}, which are not selected "
                f"(probes: {', '.join(self.probes)})"
            )
        # Probe parameters are frozen dataclass fields: sequences are tuples (a manifest or a
        # Python caller may hand in lists).
        normalised = {
            probe: {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            for probe, values in self.probe_params.items()
        }
        object.__setattr__(self, "probe_params", normalised)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ScanConfig:
        """The config a stored scan ran with (its manifest's "config")."""
        return manifests.config_from_record(cls, manifest["config"])


def check_writable(directory: Path) -> None:
    """`directory`, or the nearest ancestor that exists, takes new files; nothing is created."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputNotWritableError(
            f"output directory {directory} is not writable: {existing} is not a directory"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as error:
        raise OutputNotWritableError(
            f"output directory {directory} is not writable: {error}"
        ) from error


def _as_flag(cls: type[Probe], error: ConfigError) -> ConfigError:
    """ "SinkParams.epsilon ..." -> "--param sink.epsilon ...": name the flag the user typed."""
    message = str(error).replace(f"{cls.Params.__name__}.", f"--param {cls.name}.", 1)
    return type(error)(message)


def probe_params(config: ScanConfig) -> tuple[list[type[Probe]], dict[str, ProbeParams]]:
    """The probe families `config` names and their parameters, built (so validated) without
    torch; errors name the probe and parameter as the CLI spells them."""
    from probes.core.probe import GenerativeProbe, StreamingProbe
    from probes.families import get_probe

    probe_classes = [get_probe(name) for name in config.probes]  # unknown names fail first
    params = {}
    for cls in probe_classes:
        try:
            params[cls.name] = cls.Params(**config.probe_params.get(cls.name, {}))
        except TypeError as error:  # an unknown keyword: name the probe's parameters
            known = ", ".join(f.name for f in fields(cls.Params))
            raise ConfigError(f"probe {cls.name!r}: {error}; its parameters: {known}") from None
        except ConfigError as error:
            raise _as_flag(cls, error) from None
    if config.path == "fast":  # known from the classes, so refused before the model loads
        passes = (StreamingProbe, GenerativeProbe)
        whole = [cls.name for cls in probe_classes if not issubclass(cls, passes)]
        if whole:
            raise ConfigError(
                f"--path fast: probes {whole} need whole attention patterns, which only the "
                "bridge path gives; use --path bridge or auto"
            )
    return probe_classes, params


def prompt_suite(config: ScanConfig) -> PromptSuite:
    """The prompts of `config`: its JSONL file, or the standard-library prose."""
    from probes.inputs.prompts import load_jsonl, stdlib_docs_suite

    return load_jsonl(config.prompts) if config.prompts else stdlib_docs_suite()


def check_image_scan(config: ScanConfig) -> None:
    """Image prompts need a vision-language model and the bridge path (checked before loading)."""
    from probes.models.vision_architectures import check_reads_images

    check_reads_images(config.model)
    if config.path == "fast":
        raise ConfigError(
            "the fast path does not take image prompts; use --path bridge or auto "
            f"(prompts: {config.prompts})"
        )


def build_probes(config: ScanConfig, model: LoadedModel) -> list[Probe]:
    """The probes `config` names for `model`, each checking its parameters against the model;
    the torch seed is set first, as for every scan and every shard of one."""
    import torch

    if model.info.name != config.model:
        raise ConfigError(
            f"the scan is of model {config.model!r}, but the model given is {model.info.name!r}"
        )
    probe_classes, params = probe_params(config)
    torch.manual_seed(config.seed)
    probes = []
    for cls in probe_classes:  # a probe checks its parameters against the model here
        try:
            probes.append(cls(model.info, params[cls.name]))
        except ConfigError as error:
            raise _as_flag(cls, error) from None
    return probes


def table(
    config: ScanConfig, model: LoadedModel, suite: PromptSuite | None = None
) -> tuple[pd.DataFrame, list[Probe]]:
    """The rows a scan of `model` writes (without the run id) and the probes that made them
    (their side tables, their parameters); nothing is written."""
    from probes import engine

    probes = build_probes(config, model)
    rows = engine.run(
        model,
        probes,
        suite if suite is not None else prompt_suite(config),
        batch_size=config.batch_size,
        max_tokens=config.max_tokens,
        progress=config.progress,
        path=config.path,
    )
    return rows.assign(model=config.model), probes
