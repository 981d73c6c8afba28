"""Interventions on heads and the controls they are compared with.

    edits.py     the pure tensor edits (replace_heads, scale_heads, soft_pag, redistribute,
                 act_sinks, …): tensor in, new tensor out, no model
    kinds.py     value objects that emit hooks (HeadAblation, HeadScale, SoftPAG,
                 AttentionRedistribution)
    composed.py  `hooks` / `stacked_hooks`: interventions composed for a forward pass (kinds
                 re-exports them; applied.py uses them without importing kinds)
    applied.py   interventions on a model for a `with` block (`intervention.applied(model)`);
                 a block that changed nothing warns (NoEffectWarning) and says why
    registry.py  the one registry of intervention kinds (`INTERVENTIONS`, refusing duplicates);
                 kinds.py registers every built-in kind
    controls.py  the one random-control rule (layer-matched random heads); torch-free
    means.py     mean head outputs, the values mean ablation substitutes

Submodules are imported by name; this file stays empty so that torch-free code (the CLI, the
controls) does not pull in torch.
"""
