"""Loading a model and running it on a text: `load`, `logits`, `loss`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from probes.core.errors import ConfigError
from probes.core.options import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch

    from probes.models import LoadedModel


def load(model: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load `model` — a registry name (`headlab models`), a Hugging Face id, a local model
    directory or `tiny-random[-SEED]` — on `device` (cpu, cuda, cuda:N, mps) in `dtype`.

    The result's `bridge` is TransformerLens' TransformerBridge; `info` has its shape.
    """
    from probes.models import load as load_model

    return load_model(model, device=device, dtype=dtype)  # it checks the dtype's name


def tokens(model: LoadedModel, text: str) -> torch.Tensor:
    """[1, pos] token ids of `text`, BOS first, as every scan tokenizes it; a text longer than
    the model's context is an error naming it."""
    import torch

    from probes.engine import tokenize_suite
    from probes.inputs.prompts import text_suite

    (prompt,) = tokenize_suite(model, text_suite([text]), max_tokens=None)
    return torch.tensor([prompt.tokens], device=model.device)


def logits(model: LoadedModel, text: str) -> torch.Tensor:
    """[pos, vocab] logits of `text` (BOS first). Interventions applied around the call
    (`with hl.ablate(...)`) edit this forward pass."""
    from probes import bridge

    return bridge.forward(model, tokens(model, text))[0]


def loss(model: LoadedModel, text: str) -> float:
    """Mean next-token cross-entropy (nats) of `text` under `model`, BOS first; interventions
    applied around the call edit it."""
    from analyses.jobs.induction_check import next_token_losses
    from probes import bridge

    ids = tokens(model, text)
    if ids.shape[1] < 2:
        raise ConfigError(f"loss needs at least one token after BOS; {text!r} has none")
    return float(next_token_losses(bridge.forward(model, ids), ids).mean())
