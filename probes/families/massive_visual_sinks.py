"""The sink probe's visual sink tokens by massive activation (the visual-attention-sink paper,
MICV-yonsei/VisAttnSink; definitions in `probes.core.visual_sinks`), reduced as the pass runs.

At each layer's input the sink dimensions are read off the BOS and the massive tokens found (one
[batch, pos] mask, replaced at the next layer); that layer's pattern chunks then fold, per head,
each text query after the image and its closing marker (`probes.inputs.images.text_after_image`)
into two sums: the share of its image attention on visual sink tokens, and whether the head is
image-centric for it (share ≤ ρ and image attention ≥ summ; never in a layer without a visual
sink token). Rows:
  massive_visual_sink        per prompt and image token that is massive in some layer: the
                             number of layers in which it is (position = its index in the prompt)
  massive_visual_sink_count  per prompt and layer: how many image tokens are massive there
  visual_sink_share          per head: mean share of a text query's image attention on them
  image_centric_rate         per head: share of text queries for which the head is image-centric
"""

from __future__ import annotations

from typing import Any

import torch

from probes.core import visual_sinks as vs
from probes.core.probe import Combine
from probes.core.types import Batch
from probes.inputs.images import text_after_image
from probes.models.vision import VisionInputs

# The sink probe's totals this part keeps (how two runs of batches combine them).
TOTALS: dict[str, Combine] = {
    "share_sum": "sum",
    "centric_sum": "sum",
    "n_queries": "sum",
    "prompt_rows": "list",
}


class MassiveVisualSinks:
    """A mixin of the sink probe: running sums for image prompts (`TOTALS`); its `massive_*`
    methods run beside the probe's batch, resid_pre and pattern calls."""

    def init_massive(
        self, n_layers: int, n_heads: int, tau: float, rho: float, summ: float
    ) -> None:
        self.tau, self.rho, self.summ = tau, rho, summ
        self.share_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.centric_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.n_queries = torch.zeros(n_layers, dtype=torch.float64)
        self.prompt_rows: list[dict[str, Any]] = []
        self._image: torch.Tensor | None = None  # [batch, pos] image tokens, this batch only
        self._text: torch.Tensor | None = None  # [batch, pos] its text queries after the image
        self._massive: torch.Tensor | None = None  # [batch, pos] at the current layer only
        self._layers_massive: torch.Tensor | None = None  # [batch, pos] layers it was massive in
        self._count_rows: list[dict[str, Any]] = []

    def massive_start(self, batch: Batch, vision: VisionInputs) -> None:
        image, self._text = text_after_image(vision, batch.tokens, batch.lengths)
        self._image = image if bool(image.any()) else None
        self._layers_massive = torch.zeros(image.shape, dtype=torch.long, device=image.device)
        self._massive = None

    def massive_on_resid_pre(self, layer: int, resid: torch.Tensor, batch: Batch) -> None:
        if self._image is None or self._layers_massive is None:
            return
        massive = torch.zeros_like(self._image)
        for row, length in enumerate(batch.lengths.tolist()):
            if not bool(self._image[row].any()):
                continue
            hidden = resid[row, :length].detach()
            dims = vs.sink_dimensions(hidden[0], self.tau)
            massive[row, :length] = vs.massive_tokens(hidden, dims, self.tau)
            count = int((massive[row] & self._image[row]).sum())
            prompt = batch.prompt_ids[row]
            self._count_rows.append({"metric": "massive_visual_sink_count", "prompt": prompt,
                                     "layer": layer, "value": float(count)})  # fmt: skip
        self._massive = massive
        self._layers_massive += massive & self._image

    def massive_on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:
        if self._image is None or self._massive is None or self._text is None:
            return
        n_queries, n_keys = rows.shape[-2:]  # the rows cover keys k_start … k_start + n_keys
        image = self._image[:, None, None, k_start : k_start + n_keys]
        visual = self._massive[:, None, None, k_start : k_start + n_keys] & image
        share, image_attention = vs.sink_share(rows.float(), image, visual)  # [batch, head, q]
        centric = (share <= self.rho) & (image_attention >= self.summ)
        centric = centric & visual.flatten(1).any(-1)[:, None, None]
        counted = self._text[:, q_start : q_start + n_queries]
        weights = counted[:, None, :].to(share.dtype)
        self.share_sum[layer] += (share.nan_to_num(0.0) * weights).sum((0, 2)).double().cpu()
        self.centric_sum[layer] += (centric * weights).sum((0, 2)).double().cpu()
        self.n_queries[layer] += float(counted.sum())

    def massive_end(self, batch: Batch, token: str) -> None:
        if self._image is not None and self._layers_massive is not None:
            layers = (self._layers_massive * self._image).cpu()
            for row, prompt in enumerate(batch.prompt_ids):
                for position in layers[row].nonzero().flatten().tolist():
                    self.prompt_rows.append({"metric": "massive_visual_sink", "prompt": prompt,
                                             "position": position, "token": token,
                                             "value": float(layers[row, position])})  # fmt: skip
        self.prompt_rows.extend(self._count_rows)
        self._image = self._text = self._massive = self._layers_massive = None
        self._count_rows = []

    def massive_rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for layer in range(self.share_sum.shape[0]):
            if self.n_queries[layer] == 0:
                continue
            for head in range(self.share_sum.shape[1]):
                base = {"layer": layer, "head": head}
                share = self.share_sum[layer, head] / self.n_queries[layer]
                rate = self.centric_sum[layer, head] / self.n_queries[layer]
                out.append({**base, "metric": "visual_sink_share", "value": share.item()})
                out.append({**base, "metric": "image_centric_rate", "value": rate.item()})
        return out + self.prompt_rows
