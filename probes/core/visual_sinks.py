"""Visual sink tokens and image-centric heads ("See What You Are Told: Visual Attention Sink in
Large Multimodal Models", ICLR 2025; MICV-yonsei/VisAttnSink, src/logic/logic.py). Pure tensor
functions; no model.

- Sink dimensions: the few hidden dimensions where the sink token (the text BOS) carries a massive
  activation. The authors fix them per language model (Llama-2-7B: 2533 and 1415); here they are
  read off the BOS's residual stream: the dimensions whose RMS-normed |value| exceeds τ.
- Massive (sink) tokens, per layer (DimProspector): the tokens whose layer-input hidden state,
  RMS-normed without a weight (eps 1e-6) and taken in absolute value, exceeds τ = 20 in any sink
  dimension. Those among the image tokens are the visual sink tokens; the rest (BOS, …) are text
  sinks.
- Image-centric heads, per head and query (HeadFork): the share of the query's image attention
  that lands on visual sink tokens is at most ρ = 0.5 (so the non-sink image tokens get at least
  half) and the image attention itself is at least `summ` = 0.2. A layer without visual sink
  tokens has none.
- VAR (VARProcessor.attn_redist), in image-centric heads only: every sink token, visual or text,
  KEEPS the share p of its attention (p = 0.6; p = 1 is the identity); the 1 − p taken off goes
  to the non-sink image tokens in proportion to the attention they already get. Rows still sum
  to 1.

A √d bound: an RMS-normed vector has RMS 1, so no entry exceeds √d_model (64 for d = 4096). τ = 20
is reachable on a 7B model but not on a tiny test model (d = 32: at most 5.7); give τ for it.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

TAU = 20.0  # the authors' threshold on the RMS-normed |activation|
RHO = 0.5  # the most of a query's image attention visual sinks may hold in an image-centric head
SUMM = 0.2  # the least image attention a query of an image-centric head has
P = 0.6  # VAR: the share of their attention the sink tokens keep (1 = identity)
EPS = 1e-6


def rms_normed(hidden: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_model"]:
    """|h| / RMS(h), in float32, without the norm's weight (the authors' `rmsnorm`, eps 1e-6)."""
    hidden = hidden.float()
    return (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + EPS)).abs()


def sink_dimensions(
    bos_hidden: Float[torch.Tensor, " d_model"], tau: float = TAU
) -> Int[torch.Tensor, " dims"]:
    """The dimensions where the sink token's RMS-normed |activation| exceeds τ, largest first."""
    normed = rms_normed(bos_hidden)
    dims = (normed > tau).nonzero().flatten()
    return dims[normed[dims].argsort(descending=True)]


def massive_tokens(
    hidden: Float[torch.Tensor, "pos d_model"], dims: Int[torch.Tensor, " dims"], tau: float = TAU
) -> Bool[torch.Tensor, " pos"]:
    """Tokens whose RMS-normed |activation| exceeds τ in any sink dimension (none without dims)."""
    if not dims.numel():
        return torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    return rms_normed(hidden)[:, dims.to(hidden.device)].amax(-1) > tau


def sink_share(
    pattern: Float[torch.Tensor, "*rows k_pos"],
    image: Bool[torch.Tensor, " k_pos"],
    visual_sinks: Bool[torch.Tensor, " k_pos"],
) -> tuple[Float[torch.Tensor, "*rows"], Float[torch.Tensor, "*rows"]]:
    """Per row: the share of its image attention on visual sink tokens (the authors add 1e-6 to
    each image entry of the denominator), and its image attention."""
    on_image = pattern * image
    image_attention = on_image.sum(-1)
    on_sinks = (on_image * visual_sinks).sum(-1)
    return on_sinks / (image_attention + EPS * image.sum(-1)), image_attention


def image_centric(
    pattern: Float[torch.Tensor, "*rows k_pos"],
    image: Bool[torch.Tensor, " k_pos"],
    visual_sinks: Bool[torch.Tensor, " k_pos"],
    rho: float = RHO,
    summ: float = SUMM,
) -> Bool[torch.Tensor, "*rows"]:
    """Rows (head, query) of image-centric heads: visual sinks hold at most ρ of the row's image
    attention and the image at least `summ` of the row; none when there are no visual sinks."""
    if not bool((visual_sinks & image).any()):
        return torch.zeros(pattern.shape[:-1], dtype=torch.bool, device=pattern.device)
    share, image_attention = sink_share(pattern, image, visual_sinks & image)
    return (share <= rho) & (image_attention >= summ)
