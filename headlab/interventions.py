"""Interventions as context managers: inside the `with` block every forward pass of the model —
`hl.logits`, `hl.loss`, `hl.scan`, your own `model.bridge(...)` calls — runs with the edit.

    with hl.ablate(model, ["L18H8", (3, 1)]):
        ablated = hl.loss(model, text)

Each returns `analyses.interventions.applied.Applied` around value objects of
`analyses.interventions.kinds`; a block that changed nothing warns (`hl.NoEffectWarning`).
Heads are (layer, head) pairs or names like "L18H8"; one pair alone is one head.

`generate` greedy-generates from a text or image prompt, with interventions given to it or
applied around it:

    rows = hl.scan(llava, "data/prompts/images/images.jsonl", probes=["divergence"])
    plain = hl.generate(llava, "look at <image> what is it ?", image="red_square.png")
    with hl.vhr(llava, rows):                          # the top-VHD heads' outputs × 2
        reinforced = hl.generate(llava, "look at <image> what is it ?", image="red_square.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.interventions.applied import Applied
from analyses.interventions.kinds import (
    AttentionRedistribution,
    HeadAblation,
    HeadScale,
    Intervention,
)
from analyses.interventions.kinds import hooks as intervention_hooks
from analyses.interventions.vhr import PAPER_ALPHA, PAPER_SHARE, VisionHeadReinforcement
from probes.core.errors import ConfigError
from probes.core.heads import check_in_model, heads_of

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from analyses.interventions.registry import AblationMode
    from probes.core.heads import HeadsLike
    from probes.decoding import Generation
    from probes.models import LoadedModel


def ablate(
    model: LoadedModel,
    heads: HeadsLike,
    mode: AblationMode = "zero",
    *,
    means: torch.Tensor | None = None,
    prompts: Any = None,
) -> Applied:
    """Knock `heads` out: "zero" their outputs, replace them with their "mean" output, or give
    them "uniform" attention (the retrieval-head authors' mask: query = 0).

    "mean" substitutes `means` ([layer, head, d_head]), or computes them first over `prompts`
    (as `hl.scan` takes them; None = the standard-library prose) with `hl.head_means`.
    """
    chosen = heads_of(heads, "ablate")
    if mode == "mean" and means is None:
        from headlab.scanning import head_means

        check_in_model(chosen, model.info, "ablate")  # before the reference passes
        means = head_means(model, prompts)
    return Applied(model, [HeadAblation(chosen, mode, means=means)])


def reinforce(model: LoadedModel, heads: HeadsLike, alpha: float = 2.0) -> Applied:
    """Multiply `heads`' outputs by `alpha` (VHR reinforces the top vision-aware heads, α ≈ 2;
    α < 1 weakens them, 0 zero-ablates)."""
    return Applied(model, [HeadScale(heads_of(heads, "reinforce"), alpha)])


def redistribute(
    model: LoadedModel,
    heads: HeadsLike,
    keep: float = 0.4,
    *,
    sources: tuple[int, ...] | None = None,
    targets: tuple[int, int] | None = None,
    threshold: float = 0.1,
) -> Applied:
    """Move attention of `heads` off sink tokens, keeping the fraction `keep` on them; the
    freed mass goes to `targets` (a [start, stop) span; None = every other key) in proportion
    to the attention they already get, so rows still sum to 1.

    `sources=None` is ACT (Yu et al. 2024, β = `keep`): sinks are detected per input (α >
    `threshold`) and the first of each head — nearly always BOS — is spared, so a head whose
    only sink is BOS is left as it is (the block warns). `sources=(0,)` moves attention off BOS.
    """
    chosen = heads_of(heads, "redistribute")
    edit = AttentionRedistribution(
        chosen, keep=keep, sources=sources, targets=targets, threshold=threshold
    )
    return Applied(model, [edit])


def intervene(model: LoadedModel, *interventions: Intervention) -> Applied:
    """Any interventions of `analyses.interventions.kinds` (HeadAblation, HeadScale, SoftPAG,
    AttentionRedistribution), composed in the order given, for a `with` block."""
    return Applied(model, interventions)


def vhr(
    model: LoadedModel,
    source: pd.DataFrame | HeadsLike,
    alpha: float = PAPER_ALPHA,
    *,
    share: float = PAPER_SHARE,
    layers: Sequence[int] | None = None,
) -> Applied:
    """VHR (arXiv 2412.13949): multiply the vision-aware heads' outputs by `alpha` (2 in the
    paper). `source` is a run's rows with the divergence probe's VHD (each layer's heads above
    its median VHD, surges above mean + std left out; `share`, `layers`: see
    `analyses.interventions.vhr`), or the heads themselves."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        edit = VisionHeadReinforcement.from_rows(source, alpha, share, layers)
    else:
        edit = VisionHeadReinforcement(heads_of(source, "vhr"), alpha)
    return Applied(model, [edit])


def generate(
    model: LoadedModel,
    text: str,
    image: str | Path | None = None,
    *,
    max_new_tokens: int = 16,
    interventions: Sequence[Intervention] = (),
    keep_logits: bool = False,
) -> Generation:
    """Greedy generation from `text` (with `image`: it holds `<image>` once), up to EOS or
    `max_new_tokens`, with `interventions` (kinds of `analyses.interventions`) on every pass.
    Returns the prompt's and the generated token ids, the generated text and, with
    `keep_logits`, each step's logits [step, vocab]."""
    from probes.decoding import generate as greedy
    from probes.inputs.images import prompt_image_inputs

    if max_new_tokens < 1:
        raise ConfigError(f"generate: max_new_tokens must be at least 1, got {max_new_tokens}")
    fwd_hooks = intervention_hooks(list(interventions), model.info)
    if image is None:
        return greedy(model, model.tokenize(text), max_new_tokens=max_new_tokens,
                      fwd_hooks=fwd_hooks, keep_logits=keep_logits)  # fmt: skip
    tokens = _image_prompt_tokens(model, text, image, "generate")
    inputs = prompt_image_inputs(model, image, tokens)
    return greedy(model, tokens, image_inputs=inputs, max_new_tokens=max_new_tokens,
                  fwd_hooks=fwd_hooks, keep_logits=keep_logits)  # fmt: skip


def var(
    model: LoadedModel,
    prompt: str | Sequence[int],
    image: str | Path,
    p: float = 0.6,
    *,
    tau: float = 20.0,
    rho: float = 0.5,
    summ: float = 0.2,
    first_layer: int = 2,
    dims: Sequence[int] | None = None,
) -> Applied:
    """VAR (visual attention sink paper): visual sink tokens (massive activation > `tau` in the
    sink dimensions) found on the prompt (its text, holding `<image>` once, or its token ids)
    with its `image`, then in every pass of the block the image-centric heads' sink tokens KEEP
    the share `p` of their attention (p = 1 is the identity) and the rest goes to the other
    image tokens. A tiny model's RMS-normed activations never reach τ = 20 (at most
    √d_model): give it a lower `tau`."""
    from analyses.interventions.visual_sinks import VisualAttentionRedistribution, find_visual_sinks

    tokens = (
        _image_prompt_tokens(model, prompt, image, "var") if isinstance(prompt, str) else prompt
    )
    found = find_visual_sinks(model, tokens, image, tau=tau, first_layer=first_layer, dims=dims)
    edit = VisualAttentionRedistribution.on(found, model.info.n_heads, p, rho, summ)
    return Applied(model, [edit])


def _image_prompt_tokens(
    model: LoadedModel, text: str, image: str | Path, caller: str
) -> tuple[int, ...]:
    """The token ids of an image prompt given as text (it holds `<image>` once) and a picture."""
    from probes.inputs.images import tokenize_image_prompt
    from probes.inputs.prompts import Prompt

    if not Path(image).is_file():
        raise ConfigError(f"{caller}: image {str(image)!r} is not a file")
    prompt = Prompt(caller, text, Path(image))
    return tokenize_image_prompt(model, prompt, None, f"{caller}'s prompt").tokens
