"""Interventions on heads: value objects that emit hooks (ablation, scaling, SoftPAG,
attention redistribution), applied only inside a `with model.bridge.hooks(...)` block."""

from analyses.interventions.kinds import (
    ABLATION_MODES,
    AttentionRedistribution,
    Head,
    HeadAblation,
    HeadScale,
    Intervention,
    SoftPAG,
    act_sinks,
    hooks,
    identity_pattern,
    redistribute,
    replace_heads,
    scale_heads,
    soft_pag,
    stacked_hooks,
)

__all__ = [
    "ABLATION_MODES",
    "AttentionRedistribution",
    "Head",
    "HeadAblation",
    "HeadScale",
    "Intervention",
    "SoftPAG",
    "act_sinks",
    "hooks",
    "identity_pattern",
    "redistribute",
    "replace_heads",
    "scale_heads",
    "soft_pag",
    "stacked_hooks",
]
