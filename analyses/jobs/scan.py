"""The scan job: load a model, stream the chosen probes over a prompt suite, store the run."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.results import locks, run_ids, store
from analyses.results import manifest as manifests
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

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size)
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


@contextmanager
def claimed_run(config: ScanConfig, runs: Path) -> Iterator[str]:
    """The run id the scan writes, held under its write lock: `config.run_id`, refused when
    that run exists or is being written, or a new id no other process holds (locks.claim_new),
    so two scans started at once never share or overwrite a run."""
    if config.run_id is None:
        base = run_ids.scan_run_id(config.model, config.probes, DEFAULT_PROBES)
        with locks.claim_new(runs, store.validate_run_id(base)) as run_id:
            yield run_id
        return
    with locks.writing(runs, config.run_id):  # a second scan of the same run id is refused
        if (runs / config.run_id).exists():  # refused before the model loads
            raise store.StoreError(
                f"run {config.run_id!r} already exists under {runs}; pick another --run-id"
            )
        yield config.run_id


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
    from probes.models.vision import check_reads_images

    check_reads_images(config.model)
    if config.path == "fast":
        raise ConfigError(
            "the fast path does not take image prompts; use --path bridge or auto "
            f"(prompts: {config.prompts})"
        )


def run(
    config: ScanConfig, model: LoadedModel | None = None, suite: PromptSuite | None = None
) -> Path:
    """Run the scan described by `config`; return the new run directory. Everything is
    checked — config, probe parameters, prompts, output directory, run id — before the model
    loads. `model` (already loaded, named `config.model`) and `suite` (instead of
    `config.prompts`) serve Python callers."""
    started = time.perf_counter()
    probe_params(config)  # unknown probes and bad parameters fail before anything else
    suite = suite if suite is not None else prompt_suite(config)
    if suite.has_images:
        check_image_scan(config)
    runs = store.runs_root(config.data_dir)
    check_writable(runs)
    with claimed_run(config, runs) as run_id:
        return _scan(config, run_id, suite, model, started)


def table(
    config: ScanConfig, model: LoadedModel, suite: PromptSuite | None = None
) -> tuple[pd.DataFrame, list[Probe]]:
    """The rows a scan of `model` writes (without the run id) and the probes that made them
    (their side tables, their parameters); nothing is written."""
    import torch

    from probes import engine

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


def _scan(
    config: ScanConfig,
    run_id: str,
    suite: PromptSuite,
    model: LoadedModel | None,
    started: float,
) -> Path:
    import torch

    from probes.models import load

    if model is None:
        torch.manual_seed(config.seed)
        model = load(config.model, device=config.device, dtype=config.dtype)
    loaded = time.perf_counter()
    rows, probes = table(config, model, suite)
    scanned = time.perf_counter()
    manifest = manifests.build(
        "scan",
        config,
        model=model.provenance,
        prompts={
            "name": suite.name,
            "source": suite.source,
            "sha256": suite.sha256,
            "n_prompts": len(suite),
            "max_tokens": config.max_tokens,
            "prompt_ids": [prompt.id for prompt in suite.prompts],
        },
        probes={probe.name: probe.params.as_dict() for probe in probes},
        seed=config.seed,
        timings={
            "load_s": round(loaded - started, 3),
            "scan_s": round(scanned - loaded, 3),
            "total_s": round(time.perf_counter() - started, 3),
        },
        n_rows=len(rows),
    )
    side_tables = {  # e.g. the retrieval probe's per-sample outcomes, the pattern prompts
        name: side for probe in probes for name, side in probe.tables().items()
    }
    return store.write_run(config.data_dir, run_id, rows, manifest, side_tables)
