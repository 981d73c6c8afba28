"""VAR, Visual Attention Redistribution ("See What You Are Told", ICLR 2025; VisAttnSink),
as a decode-time intervention on a vision-language model.

1. `find_visual_sinks(model, tokens, image)`: one pass over the prompt with its image; at each
   layer from `first_layer` on (the authors: 2), the sink dimensions are read off the BOS's layer
   input and the massive tokens found (`probes.core.visual_sinks`); only the masks are kept.
2. `VisualAttentionRedistribution`: on every forward pass in its `with` block (the prefill and
   each decoding step), in each layer with a visual sink token, the rows (head, query) of
   image-centric heads are recomputed from the pattern and edited: every massive token, visual or
   text, KEEPS the share p of its attention (p = 0.6; p = 1 is the identity) and the rest goes to
   the non-sink image tokens pro rata. Queries before the text after the image (past its
   closing marker, Qwen's <|vision_end|>) are never edited (the authors edit only the text
   after the image in the prefill; decoded tokens all come after).

Unlike the authors' code, a row whose non-sink image tokens hold no attention is left as it is
(theirs divides by zero); `hl.var` builds both steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from analyses.interventions.edits import redistribute
from analyses.interventions.kinds import Edit, Intervention
from analyses.interventions.registry import check_fraction
from probes import bridge
from probes.core import hook_names
from probes.core import visual_sinks as vs
from probes.core.errors import ConfigError
from probes.inputs.images import prompt_image_inputs, text_after_image, vision_of
from probes.models import LoadedModel

LayerSinks = tuple[tuple[int, tuple[int, ...]], ...]  # (layer, massive token positions)


@dataclass(frozen=True)
class VisualSinks:
    """What `find_visual_sinks` found on one prompt: per layer the sink dimensions and the
    massive tokens (text and image), the positions of the image's tokens (not always one
    run: Idefics3 puts row tags between its crops' tokens), and where the text after the image
    starts (past its closing marker: `probes.inputs.images.text_after_image`)."""

    image: tuple[int, ...]
    dims: tuple[tuple[int, tuple[int, ...]], ...]  # (layer, sink dimensions)
    massive: LayerSinks
    text_start: int  # the first prefill query VAR may edit

    def visual(self, layer: int) -> tuple[int, ...]:
        """The visual sink tokens of `layer`: its massive tokens inside the image."""
        image = set(self.image)
        return tuple(k for k in dict(self.massive).get(layer, ()) if k in image)


def image_positions(model: LoadedModel, tokens: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """Where the image's tokens are in `tokens` (there must be some), and where the text after
    the image starts (len(tokens) when none follows)."""
    row = torch.tensor([list(tokens)])
    is_image, text = text_after_image(vision_of(model), row, torch.tensor([len(tokens)]))
    positions = tuple(is_image[0].nonzero().flatten().tolist())
    if not positions:
        raise ConfigError(f"VAR needs an image in the prompt; model {model.info.name!r} found none")
    return positions, int(text[0].nonzero()[0]) if bool(text.any()) else len(tokens)


def find_visual_sinks(
    model: LoadedModel,
    tokens: Sequence[int],
    image_file: str | Path,
    *,
    tau: float = vs.TAU,
    first_layer: int = 2,
    dims: Sequence[int] | None = None,
) -> VisualSinks:
    """Sink dimensions and massive tokens per layer on the prompt (`tokens` with BOS first and
    the image's tokens in place, `image_file` its picture). `dims` fixes the sink dimensions, as the
    authors do per model (llava-1.5-7b: 2533, 1415); None reads them off the BOS per layer."""
    if not 0 <= first_layer < model.info.n_layers:
        raise ConfigError(
            f"VAR first_layer must be in [0, {model.info.n_layers}), got {first_layer}"
        )
    image, text_start = image_positions(model, tokens)
    fixed = None if dims is None else torch.tensor([int(d) for d in dims], dtype=torch.long)
    found_dims: dict[int, tuple[int, ...]] = {}
    massive: dict[int, tuple[int, ...]] = {}

    def reduce(layer: int):  # keeps only this layer's masks, never the residual stream
        def hook(resid: torch.Tensor, hook: object) -> torch.Tensor:
            hidden = resid[0].detach()
            layer_dims = vs.sink_dimensions(hidden[0], tau) if fixed is None else fixed
            found_dims[layer] = tuple(layer_dims.tolist())
            massive[layer] = tuple(
                vs.massive_tokens(hidden, layer_dims, tau).nonzero().flatten().tolist()
            )
            return resid

        return hook

    fwd_hooks = [(hook_names.block(layer, "resid_pre"), reduce(layer))
                 for layer in range(first_layer, model.info.n_layers)]  # fmt: skip
    ids = torch.tensor([list(tokens)], device=model.device)
    inputs: dict[str, Any] = prompt_image_inputs(model, image_file, tokens)
    bridge.forward(model, ids, fwd_hooks, return_type=None, **inputs)
    return VisualSinks(
        image, tuple(sorted(found_dims.items())), tuple(sorted(massive.items())), text_start
    )


def var_pattern(
    pattern: torch.Tensor,
    massive: torch.Tensor,
    image: torch.Tensor,
    p: float = vs.P,
    rho: float = vs.RHO,
    summ: float = vs.SUMM,
    queries_from: int = 0,
) -> torch.Tensor:
    """VAR on one layer's pattern [batch, head, q_pos, k_pos]; `massive` / `image` are key masks
    [k_pos]. Rows of image-centric heads (queries at or after `queries_from`) move 1 − p of their
    massive tokens' attention to the non-sink image tokens; other rows are returned as they are."""
    rows = vs.image_centric(pattern, image, massive & image, rho, summ)  # [batch, head, q_pos]
    q_len, k_len = pattern.shape[-2:]
    positions = torch.arange(q_len, device=pattern.device) + (k_len - q_len)
    rows = rows & (positions >= queries_from)
    if not bool(rows.any()):
        return pattern
    edited = redistribute(pattern, massive, image, p)
    return torch.where(rows[..., None], edited, pattern)


@dataclass(frozen=True)
class VisualAttentionRedistribution(Intervention):
    """The paper's VAR with the sinks `find_visual_sinks` found; `heads` are every head of the
    layers that have a visual sink token (image-centric rows among them are chosen per pass).
    p is the share the sink tokens KEEP (p = 1 is the identity)."""

    name: ClassVar[str] = "visual_attention_redistribution"
    heads: tuple[tuple[int, int], ...]
    sinks: VisualSinks
    p: float = vs.P
    rho: float = vs.RHO
    summ: float = vs.SUMM

    def __post_init__(self) -> None:
        check_fraction(self.p, "VAR's p (the share the sink tokens keep)")
        check_fraction(self.rho, "VAR's rho")
        check_fraction(self.summ, "VAR's summ")

    @classmethod
    def on(cls, sinks: VisualSinks, n_heads: int, p: float = vs.P, rho: float = vs.RHO,
           summ: float = vs.SUMM) -> VisualAttentionRedistribution:  # fmt: skip
        """Every head of the layers with a visual sink token."""
        layers = [layer for layer, _ in sinks.massive if sinks.visual(layer)]
        heads = tuple((layer, head) for layer in layers for head in range(n_heads))
        return cls(heads, sinks, p, rho, summ)

    @property
    def label(self) -> str:
        layers = "+".join(str(layer) for layer in sorted({layer for layer, _ in self.heads}))
        return f"var{self.p:g}[L{layers or '-'}]"

    @property
    def no_effect_hint(self) -> str:
        if self.p == 1:
            return "p = 1 leaves all attention on the sink tokens (the identity)"
        if not self.heads:
            return "no layer has a visual sink token (lower tau, or first_layer)"
        return f"no query's head was image-centric (rho = {self.rho:g}, summ = {self.summ:g})"

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        image, massive = self.sinks.image, dict(self.sinks.massive)[layer]

        def edit(pattern: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
            keys = torch.arange(pattern.shape[-1], device=pattern.device)
            is_massive = torch.isin(keys, torch.tensor(massive, device=pattern.device))
            is_image = torch.isin(keys, torch.tensor(image, device=pattern.device))
            chosen = pattern[:, heads]
            out = pattern.clone()
            out[:, heads] = var_pattern(chosen, is_massive, is_image, self.p, self.rho,
                                        self.summ, queries_from=self.sinks.text_start)  # fmt: skip
            return out

        return [(hook_names.attn(layer, "pattern"), edit)]
