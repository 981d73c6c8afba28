"""headlab: what attention heads of real transformers do, from one import.

    import headlab as hl

    model = hl.load("smollm2-135m")                   # TransformerLens bridge + tokenizer + shape
    table = hl.scan(model, probes=["sink"])            # tidy DataFrame, the rows a scan stores
    hl.top_heads(table, "alpha", position=0, k=5)      # rank, name ("L3H2"), layer, head, value
    hl.plot.head_map(table, "alpha", position=0)       # plotly figure
    with hl.ablate(model, "L3H2"):                     # every forward pass inside is edited
        hl.loss(model, "Some text.")

Models      load, logits, loss, tokens
Scans       scan, head_means
Results     runs, read, manifest, head_values, top_heads
Figures     plot (head_map, pattern, and the dashboard's charts)
Edits       ablate, reinforce, vhr, redistribute, intervene — context managers on a model
Generation  generate (greedy, text or image prompts, optional interventions)
Sweeps      sweep
Types       Head, LoadedModel, HeadAblation, HeadScale, SoftPAG, AttentionRedistribution,
            SweepPlan, HeadlabError, ConfigError, NoEffectWarning

Heads are (layer, head) pairs or names like "L18H8" everywhere. Every error a user can cause
is a `HeadlabError`. Importing headlab is light: torch and transformers load with the first
name that needs them (`hl.runs()`, `hl.read()`, `hl.top_heads()` and `hl.plot` never do).
The packages underneath (`probes`, `analyses`, `dashboard`) stay importable on their own; this
facade only delegates to them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyses.interventions.applied import NoEffectWarning
    from analyses.interventions.kinds import (
        AttentionRedistribution,
        HeadAblation,
        HeadScale,
        SoftPAG,
    )
    from analyses.sweeps.plan import SweepPlan
    from headlab import plot
    from headlab.interventions import (
        ablate,
        generate,
        intervene,
        redistribute,
        reinforce,
        var,
        vhr,
    )
    from headlab.models import load, logits, loss, tokens
    from headlab.results import head_values, manifest, read, runs, top_heads
    from headlab.scanning import head_means, scan
    from headlab.sweeps import sweep
    from probes.core.errors import ConfigError, HeadlabError
    from probes.core.heads import Head
    from probes.models import LoadedModel

# Public name -> the module that defines it, imported on first use (PEP 562).
_HOMES = {
    "load": "headlab.models",
    "logits": "headlab.models",
    "loss": "headlab.models",
    "tokens": "headlab.models",
    "scan": "headlab.scanning",
    "head_means": "headlab.scanning",
    "runs": "headlab.results",
    "read": "headlab.results",
    "manifest": "headlab.results",
    "head_values": "headlab.results",
    "top_heads": "headlab.results",
    "ablate": "headlab.interventions",
    "reinforce": "headlab.interventions",
    "redistribute": "headlab.interventions",
    "intervene": "headlab.interventions",
    "vhr": "headlab.interventions",
    "generate": "headlab.interventions",
    "var": "headlab.interventions",
    "sweep": "headlab.sweeps",
    "Head": "probes.core.heads",
    "LoadedModel": "probes.models",
    "HeadAblation": "analyses.interventions.kinds",
    "HeadScale": "analyses.interventions.kinds",
    "SoftPAG": "analyses.interventions.kinds",
    "AttentionRedistribution": "analyses.interventions.kinds",
    "NoEffectWarning": "analyses.interventions.applied",
    "SweepPlan": "analyses.sweeps.plan",
    "HeadlabError": "probes.core.errors",
    "ConfigError": "probes.core.errors",
}
_SUBMODULES = ("plot",)

__all__ = [  # _HOMES and _SUBMODULES, spelled out for tools that read __all__ statically
    "AttentionRedistribution",
    "ConfigError",
    "Head",
    "HeadAblation",
    "HeadScale",
    "HeadlabError",
    "LoadedModel",
    "NoEffectWarning",
    "SoftPAG",
    "SweepPlan",
    "ablate",
    "generate",
    "head_means",
    "head_values",
    "intervene",
    "load",
    "logits",
    "loss",
    "manifest",
    "plot",
    "read",
    "redistribute",
    "reinforce",
    "runs",
    "scan",
    "sweep",
    "tokens",
    "top_heads",
    "var",
    "vhr",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"headlab.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module 'headlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
