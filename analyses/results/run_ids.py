"""How jobs name the runs they create: short, readable ids; the manifest keeps the provenance.

    scan   <model>-<probes>-<YYYYMMDD-HHMMSS>   smollm2-135m-default-20261202-043116
    sweep  <model>-sweep-<plan hash>            smollm2-135m-sweep-8716e2dd

`<model>` is the model's short name (a Hugging Face id or a directory gives its last part);
`<probes>` is `default` for the default scan's probes, the probe's name for one probe, names
joined by '.' for a few, and the first name with a count for many (`sink.4more`). The scan's
time (UTC) comes last, so the runs of one model and probe set sort by time. A sweep's id is
a hash of its plan, not a time: rerunning the same command finds the same run and resumes it.

Two scans that start in the same second with the same model and probes would get the same id:
`locks.claim_new` gives the second `<id>-2` (and so on) under the run's write lock, and the
store never writes over an existing run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

MODEL_CHARS = 24  # the most of a model's name an id keeps
PROBES_CHARS = 24  # the most a list of probe names may take before it is counted instead
STAMP_FORMAT = "%Y%m%d-%H%M%S"


def model_part(model: str) -> str:
    """A model name, path or Hugging Face id cut to its last part, in run-id characters."""
    name = Path(model.rstrip("/")).name or model
    part = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:MODEL_CHARS].rstrip("._-")
    return part or "model"


def probes_part(probes: Sequence[str], default: Sequence[str]) -> str:
    """`default`, one probe's name, a few names joined by '.', or the first and a count."""
    if sorted(probes) == sorted(default):
        return "default"
    joined = ".".join(probes)
    if len(joined) <= PROBES_CHARS:
        return joined
    more = f".{len(probes) - 1}more" if len(probes) > 1 else ""
    return probes[0][: PROBES_CHARS - len(more)] + more


def scan_run_id(
    model: str, probes: Sequence[str], default: Sequence[str], now: datetime | None = None
) -> str:
    """The id of a new scan of `model` with `probes` (`default`: the default scan's probes)."""
    stamp = (now or datetime.now(UTC)).strftime(STAMP_FORMAT)
    return f"{model_part(model)}-{probes_part(probes, default)}-{stamp}"


def sweep_run_id(model: str, plan_sha256: str) -> str:
    """The run a sweep plan merges into when no --run is given: the same for the same plan."""
    return f"{model_part(model)}-sweep-{plan_sha256[:8]}"


def legacy_sweep_run_id(model: str, plan_sha256: str) -> str:
    """The id sweeps got before the short ids, so that such a sweep still resumes."""
    return f"sweep-{model.replace('/', '_')}-{plan_sha256[:10]}"[:120]
