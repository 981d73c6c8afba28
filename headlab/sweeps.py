"""Intervention sweeps from Python: `sweep` runs a plan with `analyses.sweeps.runner`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.results import store
from analyses.sweeps.plan import SweepPlan
from analyses.sweeps.plan_file import load_plan, plan_from_dict
from probes.core.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from probes.models import LoadedModel


def plan_of(plan: Any, model: LoadedModel | None = None) -> tuple[SweepPlan, str]:
    """A SweepPlan and where it came from: a SweepPlan, a dict shaped like the TOML plan
    (`analyses/sweeps/plan.py`; its "model" defaults to `model`'s), or a TOML file."""
    if isinstance(plan, SweepPlan):
        return plan, "plan"
    if isinstance(plan, str | Path):
        return load_plan(plan), str(plan)
    if isinstance(plan, Mapping):
        raw = dict(plan)
        if model is not None:
            raw.setdefault("model", model.info.name)
        return plan_from_dict(raw, "plan"), "plan"
    raise ConfigError(
        f"plan: give a SweepPlan, a dict like a TOML plan or a TOML file, got {type(plan).__name__}"
    )


def sweep(
    plan: Any,
    *,
    model: LoadedModel | None = None,
    data: str | Path = "data",
    run_id: str | None = None,
    metrics_run: str | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> pd.DataFrame:
    """Run (or finish: sweeps resume) a sweep plan and return its table: per unit of work the
    task measure under the intervention and its harm over clean (probe "sweep"), plus any
    attribution estimates. The rows are stored in run `run_id` under `data` (default: named
    after the plan); top-k plans rank heads by the metrics of `metrics_run` (default: the same
    run, e.g. one made by `hl.scan(..., save=True, run_id=...)`). `model` defaults to loading
    the plan's model.

        hl.sweep({"tasks": {"ioi": {}}, "single_head": {"modes": ["zero"]}}, model=model)
    """
    from analyses.sweeps.runner import SweepConfig
    from analyses.sweeps.runner import run as run_sweep

    chosen, source = plan_of(plan, model)
    config = SweepConfig(
        plan=chosen,
        data_dir=Path(data),
        run_id=run_id,
        metrics_run=metrics_run,
        device=device,
        progress=progress,
        plan_source=source,
    )
    return store.read_table(run_sweep(config, model))
