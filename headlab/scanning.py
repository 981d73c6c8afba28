"""Scanning a model with probes into a DataFrame: `scan`, and the head means mean ablation uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.jobs.scan import DEFAULT_PROBES, ScanConfig
from analyses.jobs.scan import table as scan_table
from analyses.jobs.scan_runs import run_one as run_scan
from analyses.results import store
from probes.core.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from probes.inputs.prompts import PromptSuite
    from probes.models import LoadedModel


def suite_of(prompts: Any) -> PromptSuite | None:
    """The prompts `scan` takes: None (the standard-library prose), a JSONL file (a path, as
    text or Path), a list of texts, or a PromptSuite."""
    from probes.inputs.prompts import PromptSuite, load_jsonl, text_suite

    if prompts is None or isinstance(prompts, PromptSuite):
        return prompts
    if isinstance(prompts, str | Path):
        return load_jsonl(prompts)
    if isinstance(prompts, Sequence):
        return text_suite(prompts)
    raise ConfigError(
        "prompts: give None (standard-library prose), a JSONL file, a list of texts or a "
        f"PromptSuite; got {type(prompts).__name__}"
    )


def _probe_params(params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{probe: {name: value}} from dicts or probe parameter objects (SinkParams(...))."""
    record: dict[str, dict[str, Any]] = {}
    for probe, values in (params or {}).items():
        if is_dataclass(values) and not isinstance(values, type):
            values = asdict(values)
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"params[{probe!r}] must be a dict of parameters or the probe's Params, "
                f"got {values!r}"
            )
        record[probe] = dict(values)
    return record


def scan(
    model: LoadedModel,
    prompts: Any = None,
    probes: str | Sequence[str] = DEFAULT_PROBES,
    params: Mapping[str, Any] | None = None,
    *,
    max_tokens: int | None = 256,
    batch_size: int = 4,
    path: str = "auto",
    seed: int = 0,
    progress: bool = False,
    save: bool = False,
    data: str | Path = "data",
    run_id: str | None = None,
) -> pd.DataFrame:
    """Run `probes` over `prompts` on `model`; return the results table (schema v2 columns).

    The rows and their types are those `headlab scan` writes (`run_id` empty); nothing is
    written unless `save`, which stores a run under `data` (side tables and manifest included)
    and returns it as read back. `prompts`: None (standard-library prose), a JSONL file, a list
    of texts or a PromptSuite. `params`: {probe: {name: value}} or {probe: Params(...)}, e.g.
    {"sink": {"epsilon": 0.2}}. Interventions applied around the call edit the scan.
    """
    config = ScanConfig(
        model=model.info.name,
        probes=(probes,) if isinstance(probes, str) else tuple(probes),
        max_tokens=max_tokens,
        batch_size=batch_size,
        data_dir=Path(data),
        seed=seed,
        run_id=run_id,
        progress=progress,
        path=path,
        probe_params=_probe_params(params),
    )
    suite = suite_of(prompts)
    if save:
        directory = run_scan(config, model, suite)
        return store.load_run(config.data_dir, directory.name)
    rows, _ = scan_table(config, model, suite)
    return store.conform(rows.assign(run_id=None))  # no run: the run id stays empty


def head_means(
    model: LoadedModel, prompts: Any = None, *, max_tokens: int | None = 256, batch_size: int = 4
) -> torch.Tensor:
    """[layer, head, d_head] mean output of every head over the real tokens of `prompts`
    (as `scan` takes them), the values mean ablation substitutes."""
    from analyses.interventions.means import head_means as means_over
    from analyses.jobs.scan import prompt_suite
    from probes.engine import batches, tokenize_suite

    suite = suite_of(prompts)
    if suite is None:
        suite = prompt_suite(ScanConfig(model=model.info.name))
    tokenized = tokenize_suite(model, suite, max_tokens)
    return means_over(model, batches(tokenized, batch_size, model.pad_id, model.device))
