"""The one place that spells TransformerLens hook names. Everything else asks here."""

from __future__ import annotations

import re

ATTN_KINDS = ("pattern", "attn_scores", "q", "k", "v", "z", "rot_q", "rot_k", "result")
BLOCK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def attn(layer: int, kind: str) -> str:
    """Hook name of an attention-internal activation, e.g. attn(3, "pattern")."""
    if kind not in ATTN_KINDS:
        raise ValueError(f"unknown attention hook kind {kind!r}; expected one of {ATTN_KINDS}")
    return f"blocks.{layer}.attn.hook_{kind}"


def block(layer: int, kind: str) -> str:
    """Hook name of a residual-stream activation of a block, e.g. block(0, "resid_pre")."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown block hook kind {kind!r}; expected one of {BLOCK_KINDS}")
    return f"blocks.{layer}.hook_{kind}"


def final_norm(kind: str = "out") -> str:
    """Hook name around the final normalisation before the unembedding, e.g. final_norm("out")."""
    if kind not in ("in", "out"):
        raise ValueError(f"unknown final-norm hook kind {kind!r}; expected 'in' or 'out'")
    return f"ln_final.hook_{kind}"


def logits() -> str:
    """Hook name of the unembedding's output, the logits [batch, pos, vocab]."""
    return "unembed.hook_out"


def layer_of(hook_name: str) -> int:
    """The layer index a block hook name refers to."""
    match = _LAYER.match(hook_name)
    if match is None:
        raise ValueError(f"{hook_name!r} is not a per-layer hook name")
    return int(match.group(1))
