"""Attention sinks: Gu et al. 2024 (α, Sink_k^ε), ACT's hidden sinks, massive activations.

α(l,h,k) = Σ_{i≥k} A[i,k] / (T−k): the mean attention key k receives from the queries that can
see it, the diagonal included (sail-sg/Attention-Sink, compute_attention_sink). A head sinks on
k in one sequence when α > ε; Sink_k^ε is the percentage of (sequence, layer, head) that do.
ACT (Yu et al. 2024) calls any k > 0 with α > 0.1 a hidden sink of that head on that input.

Visual sink tokens, on image prompts of a vision-language model: per head the largest α over the
image's tokens ("visual_sink_alpha"), and per prompt the `visual_sinks` image tokens with the
largest α averaged over every head and layer ("visual_sink"). (The visual-sink paper picks them
by massive activation in the sink dimensions instead: `massive_visual_sinks`, rows there.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from probes.core import visual_sinks as vs
from probes.core.probe import StreamingProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, ModelInfo, ProbeParams
from probes.families import massive_visual_sinks as massive
from probes.families.massive_visual_sinks import MassiveVisualSinks
from probes.models import LoadedModel, decode_text
from probes.models.vision import VisionInputs


def sink_alpha(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    lengths: Int[torch.Tensor, " batch"],
) -> Float[torch.Tensor, "batch head k_pos"]:
    """α per sequence, head and key position; NaN where k is padding.

    Padding query rows are excluded; with right padding and a causal mask, real queries never
    attend to padding keys, so every real row still sums to 1.
    """
    positions = torch.arange(pattern.shape[-1], device=pattern.device)
    real = (positions[None, :] < lengths[:, None]).to(pattern.dtype)  # [batch, pos]
    return alpha_from_received(torch.einsum("bhqk,bq->bhk", pattern, real), lengths)


def alpha_from_received(
    received: Float[torch.Tensor, "... batch head k_pos"], lengths: Int[torch.Tensor, " batch"]
) -> Float[torch.Tensor, "... batch head k_pos"]:
    """α from the attention each key received from real queries: divide by the T−k queries that
    can see key k; NaN where k is padding."""
    positions = torch.arange(received.shape[-1], device=received.device)
    queries_seeing_k = (lengths[:, None] - positions[None, :]).clamp(min=1).to(received.dtype)
    alpha = received / queries_seeing_k[:, None, :]
    padding = positions[None, :] >= lengths[:, None]
    return alpha.masked_fill(padding[:, None, :], float("nan"))


def add_received(
    received: Float[torch.Tensor, "batch head k_pos"],
    rows: Float[torch.Tensor, "batch head q_chunk k"],
    real_queries: torch.Tensor,
) -> None:
    """received[..., :k] += Σ_q rows[..., q, :] over the real queries (mask [batch, ≥ q_chunk]).

    A batched matrix product with the query mask, accumulated in place: on the CPU this is about
    twice as fast as `rows.sum(2)` followed by an add, and it is the probe's only pass over rows.
    """
    n_batch, n_heads, n_queries, n_keys = rows.shape
    dtype = received.dtype
    weights = real_queries[:, None, None, :n_queries].to(dtype)
    weights = weights.expand(n_batch, n_heads, 1, n_queries).reshape(-1, 1, n_queries)
    into = received[..., :n_keys].view(n_batch * n_heads, 1, n_keys)  # a view: updated in place
    into.baddbmm_(weights, rows.to(dtype).reshape(n_batch * n_heads, n_queries, n_keys))


def hidden_sink_mask(
    alpha: Float[torch.Tensor, "batch head k_pos"], threshold: float = 0.1
) -> torch.Tensor:
    """ACT's hidden sinks: key positions k > 0 whose α exceeds `threshold` (NaN never does)."""
    mask = alpha > threshold
    mask[..., 0] = False
    return mask


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """torch.median of all the values (the lower of the two middle ones for an even count).

    On the CPU, numpy's introselect finds it several times faster than torch.median does,
    which matters when it runs on every layer's residual stream.
    """
    flat = values.detach().flatten()
    if flat.device.type != "cpu":
        return flat.median()
    middle = (flat.numel() - 1) // 2
    return torch.tensor(np.partition(flat.numpy(), middle)[middle])


def massive_activation_ratio(
    resid: Float[torch.Tensor, "batch pos d_model"],
    lengths: Int[torch.Tensor, " batch"],
    sink_position: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest |h| at the sink token, and at any other token, each over the sequence's median |h|.

    Massive activations (Sun et al. 2024; the visual-sink paper's sink dimensions) are a few
    hidden dimensions of the sink token far above everything else: ratios in the hundreds.
    """
    sink_ratio, other_ratio = [], []
    for index, length in enumerate(lengths.tolist()):
        magnitude = resid[index, :length].abs().float()
        median = lower_median(magnitude).clamp(min=torch.finfo(torch.float32).tiny)
        token_max = magnitude.amax(dim=-1)
        sink_ratio.append(token_max[sink_position] / median)
        others = torch.cat([token_max[:sink_position], token_max[sink_position + 1 :]])
        other_ratio.append(others.max() / median if others.numel() else torch.tensor(float("nan")))
    return torch.stack(sink_ratio), torch.stack(other_ratio)


@dataclass(frozen=True)
class SinkParams(ProbeParams):
    """Parameters of the sink probe: ε, the α above which a head sinks on a key (Gu et al.);
    ACT's threshold for hidden sinks beyond position 0; how many key positions are stored."""

    epsilon: float = 0.3  # Gu et al.'s threshold on α
    hidden_threshold: float = 0.1  # ACT's threshold for hidden sinks beyond position 0
    n_positions: int = 16  # α and Sink_k^ε are stored for the first n key positions
    visual_sinks: int = 3  # image prompts: the top image tokens stored per prompt
    tau: float = vs.TAU  # image prompts: massive activation (RMS-normed |h| in a sink dimension)
    rho: float = vs.RHO  # image-centric: visual sinks hold at most ρ of a query's image attention
    summ: float = vs.SUMM  # image-centric: the query's image attention is at least summ

    def check(self) -> None:
        self.require(self.visual_sinks >= 1, "visual_sinks", "at least 1")
        self.require(0 <= self.epsilon < 1, "epsilon", "in [0, 1)")
        self.require(0 <= self.hidden_threshold < 1, "hidden_threshold", "in [0, 1)")
        self.require(self.n_positions >= 1, "n_positions", "at least 1")
        self.require(self.tau > 0, "tau", "above 0")
        self.require(0 <= self.rho <= 1 and 0 <= self.summ <= 1, "rho/summ", "in [0, 1]")


@register_probe
class SinkProbe(StreamingProbe[SinkParams], MassiveVisualSinks):
    """Attention sinks. Rows per head and key position k < n_positions: "alpha" (mean attention
    k receives from the queries that see it) and "sink_rate" (share of sequences with α > ε);
    per head "hidden_sink_count" / "hidden_sink_rate" (keys k > 0 with α > the hidden
    threshold, ACT); per layer "massive_ratio" (max |h| at the sink token over the median)."""

    name = "sink"
    Params = SinkParams
    description = "attention sinks: α and Sink_k^ε (Gu et al.), hidden sinks (ACT), massive acts"
    reads = frozenset({"pattern", "resid_pre"})
    totals = totals_of(
        alpha_sum="sum", sink_count="sum", sequences_at="sum", hidden_count_sum="sum",
        hidden_any_sum="sum", massive_sink_sum="sum", massive_other_sum="sum", n_sequences="sum",
        visual_alpha_sum="sum", n_image_sequences="sum", visual_rows="list", **massive.TOTALS,
    )  # fmt: skip

    def __init__(self, info: ModelInfo, params: SinkParams | None = None) -> None:
        super().__init__(info, params)
        n_layers, n_heads, k = info.n_layers, info.n_heads, self.params.n_positions
        self.alpha_sum = torch.zeros(n_layers, n_heads, k, dtype=torch.float64)
        self.sink_count = torch.zeros(n_layers, n_heads, k, dtype=torch.float64)
        self.sequences_at = torch.zeros(k, dtype=torch.float64)  # sequences long enough for k
        self.hidden_count_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.hidden_any_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.massive_sink_sum = torch.zeros(n_layers, dtype=torch.float64)
        self.massive_other_sum = torch.zeros(n_layers, dtype=torch.float64)
        self.n_sequences = 0
        self._received: torch.Tensor | None = None  # [layer, batch, head, k_pos], this batch only
        self.vision: VisionInputs | None = None  # set by `bind` for a vision-language model
        self.image_token_id: int | None = None
        self.image_token = ""
        self.visual_alpha_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.n_image_sequences = 0
        self.visual_rows: list[dict[str, Any]] = []
        p = self.params
        self.init_massive(n_layers, n_heads, p.tau, p.rho, p.summ)

    def bind(self, model: LoadedModel) -> None:
        if model.vision is not None:
            self.vision = model.vision
            self.image_token_id = model.vision.image_token_id
            self.image_token = decode_text(model.tokenizer, [self.image_token_id])

    def start_batch(self, batch: Batch) -> None:
        n_batch, n_positions = batch.tokens.shape
        shape = (self.info.n_layers, n_batch, self.info.n_heads, n_positions)
        self._received = torch.zeros(shape, dtype=torch.float32, device=batch.tokens.device)
        if self.vision is not None:
            self.massive_start(batch, self.vision)

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        # Attention received per key from the real query rows of this chunk; α needs all rows.
        received = self._batch_state(self._received)
        add_received(received[layer][..., k_start:], rows, batch.query_mask[:, q_start:])
        if self.image_token_id is not None:
            self.massive_on_pattern(layer, rows, q_start, batch, k_start)

    def on_resid_pre(self, layer: int, resid: torch.Tensor, batch: Batch) -> None:
        sink_ratio, other_ratio = massive_activation_ratio(resid, batch.lengths)
        self.massive_sink_sum[layer] += sink_ratio.double().sum().cpu()
        self.massive_other_sum[layer] += other_ratio.double().nansum().cpu()
        if self.image_token_id is not None:
            self.massive_on_resid_pre(layer, resid, batch)

    def end_batch(self, batch: Batch) -> None:
        k = self.params.n_positions
        lengths = batch.lengths
        self.n_sequences += len(lengths)
        self.sequences_at += (lengths[:, None].cpu() > torch.arange(k)[None, :]).sum(0)
        received = self._batch_state(self._received)
        alpha = alpha_from_received(received, lengths).double().cpu()  # [l, b, h, k_pos]
        head_k = alpha[..., :k]
        self.alpha_sum[:, :, : head_k.shape[-1]] += head_k.nan_to_num(0.0).sum(1)
        self.sink_count[:, :, : head_k.shape[-1]] += (head_k > self.params.epsilon).double().sum(1)
        hidden = hidden_sink_mask(alpha, self.params.hidden_threshold)
        self.hidden_count_sum += hidden.sum(-1).double().sum(1)
        self.hidden_any_sum += hidden.any(-1).double().sum(1)
        if self.image_token_id is not None:
            self.add_visual_sinks(alpha, batch, self.image_token_id)
            self.massive_end(batch, self.image_token)
        self._received = None

    def add_visual_sinks(self, alpha: torch.Tensor, batch: Batch, image_token_id: int) -> None:
        """Fold the image tokens' α (alpha [layer, batch, head, k_pos]) into the visual rows."""
        is_image = batch.tokens.eq(image_token_id).cpu()
        for row, prompt_id in enumerate(batch.prompt_ids):
            positions = is_image[row].nonzero().flatten()
            if not positions.numel():
                continue
            image_alpha = alpha[:, row][..., positions]  # [layer, head, image token]
            self.visual_alpha_sum += image_alpha.amax(-1)
            self.n_image_sequences += 1
            overall = image_alpha.mean((0, 1))
            top = overall.topk(min(self.params.visual_sinks, overall.numel()))
            for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                position = int(positions[index])
                self.visual_rows.append(
                    {
                        "metric": "visual_sink",
                        "prompt": prompt_id,
                        "position": position,
                        "token": self.image_token,
                        "value": value,
                    }
                )

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        seen = self.sequences_at.clamp(min=1)
        alpha = self.alpha_sum / seen
        sink_rate = self.sink_count / seen
        n = max(self.n_sequences, 1)
        for layer in range(self.info.n_layers):
            for head in range(self.info.n_heads):
                for k in range(self.params.n_positions):
                    if self.sequences_at[k] == 0:
                        continue
                    base = {"layer": layer, "head": head, "position": k}
                    rows.append({**base, "metric": "alpha", "value": alpha[layer, head, k].item()})
                    rows.append(
                        {**base, "metric": "sink_rate", "value": sink_rate[layer, head, k].item()}
                    )
                base = {"layer": layer, "head": head}
                if self.n_image_sequences:
                    visual = self.visual_alpha_sum[layer, head] / self.n_image_sequences
                    rows.append({**base, "metric": "visual_sink_alpha", "value": visual.item()})
                rows.append(
                    {
                        **base,
                        "metric": "hidden_sink_count",
                        "value": (self.hidden_count_sum[layer, head] / n).item(),
                    }
                )
                rows.append(
                    {
                        **base,
                        "metric": "hidden_sink_rate",
                        "value": (self.hidden_any_sum[layer, head] / n).item(),
                    }
                )
            rows.append(
                {
                    "layer": layer,
                    "head": None,
                    "position": 0,
                    "metric": "massive_ratio",
                    "condition": "sink_token",
                    "value": (self.massive_sink_sum[layer] / n).item(),
                }
            )
            rows.append(
                {
                    "layer": layer,
                    "head": None,
                    "metric": "massive_ratio",
                    "condition": "other_tokens",
                    "value": (self.massive_other_sum[layer] / n).item(),
                }
            )
        return rows + self.visual_rows + self.massive_rows()
