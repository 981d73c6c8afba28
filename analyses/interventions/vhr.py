"""VHR, Vision-aware Head Reinforcement (He et al., ACL 2025, arXiv 2412.13949): multiply the
outputs of the vision-aware heads, those with the highest VHD (head divergence with vs without
the image, the divergence probe's "vhd" rows), by α (the paper's default α = 2).

Which heads, following the paper's rule layer by layer: in each reinforced layer, heads whose
VHD surges above the layer's mean + one standard deviation are left out as outliers (a numeric
surge, not vision), and of the others those above the layer's median VHD are reinforced (the
paper's proportion: half of a layer's heads, `share` = 0.5). `layers` limits the reinforced
layers (the paper ablates how many; None = every layer).

One difference from the paper, said plainly: the paper selects heads afresh for every sample
and generation step, layer by layer (its VHD at that token, with earlier layers already
reinforced), which needs a second, image-free forward pass per step. Here the selection is
static: made once from a divergence run's VHD (mean over prompts and generated tokens), then
applied to every forward pass, prefill and decoding steps alike. α = 1 is the identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import mean, pstdev
from typing import TYPE_CHECKING, ClassVar

from analyses.interventions.kinds import Edit, Head, HeadScale, _label_heads
from analyses.interventions.registry import check_fraction, register_intervention
from probes.core import schema
from probes.core.errors import ConfigError
from probes.core.heads import heads_of

if TYPE_CHECKING:
    import pandas as pd

PAPER_ALPHA = 2.0
PAPER_SHARE = 0.5  # the heads above their layer's median


def select_heads(
    vhd: Mapping[Head, float],
    share: float = PAPER_SHARE,
    layers: Sequence[int] | None = None,
    drop_surges: bool = True,
) -> tuple[Head, ...]:
    """The vision-aware heads of each layer by the paper's rule: surges (VHD > the layer's
    mean + standard deviation) left out, the rest reinforced where their VHD is above the
    layer's (1 − `share`)-quantile (`share` = 0.5: above the layer's median)."""
    check_fraction(share, "VHR's share of each layer's heads")
    by_layer: dict[int, dict[int, float]] = {}
    for (layer, head), value in vhd.items():
        by_layer.setdefault(layer, {})[head] = value
    wanted = set(by_layer) if layers is None else set(layers)
    unknown = sorted(wanted - set(by_layer))
    if unknown:
        raise ConfigError(f"VHR layers {unknown} have no VHD (layers scored: {sorted(by_layer)})")
    chosen: list[Head] = []
    for layer in sorted(wanted):
        values = by_layer[layer]
        limit = mean(values.values()) + pstdev(values.values())
        kept = {h: v for h, v in values.items() if not (drop_surges and v > limit)}
        threshold = quantile(sorted(values.values()), 1 - share)  # share 0.5: the median
        picked = kept if share == 1 else {h: v for h, v in kept.items() if v > threshold}
        chosen += [(layer, head) for head in sorted(picked)]
    return tuple(chosen)


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, linearly interpolated (q = 0.5 is the median)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def vhd_of(rows: pd.DataFrame) -> dict[Head, float]:
    """Per-head VHD from a run's rows (the divergence probe's "vhd" metric)."""
    metric = schema.metric("divergence", "vhd")
    picked = rows[(rows["probe"] == "divergence") & (rows["metric"] == metric)]
    if "condition" in picked:
        picked = picked[picked["condition"].isna()]
    if picked.empty:
        raise ConfigError(
            "these rows have no divergence VHD (probe 'divergence', metric 'vhd'); scan the "
            "model with --probes divergence on image prompts first"
        )
    return {(int(r.layer), int(r.head)): float(r.value) for r in picked.itertuples()}


@register_intervention
@dataclass(frozen=True)
class VisionHeadReinforcement(HeadScale):
    """VHR: the vision-aware heads' outputs (hook_z) times `alpha`. Build it from a divergence
    run's rows with `from_rows`, or give the heads."""

    name: ClassVar[str] = "vhr"
    heads: tuple[Head, ...]
    alpha: float = PAPER_ALPHA

    @classmethod
    def from_rows(
        cls,
        rows: pd.DataFrame,
        alpha: float = PAPER_ALPHA,
        share: float = PAPER_SHARE,
        layers: Sequence[int] | None = None,
        drop_surges: bool = True,
    ) -> VisionHeadReinforcement:
        """VHR on the heads `select_heads` picks from the rows' VHD."""
        heads = select_heads(vhd_of(rows), share, layers, drop_surges)
        return cls(heads_of(heads, "VHR heads"), alpha)

    @property
    def label(self) -> str:
        return f"vhr{self.alpha:g}({_label_heads(self.heads)})"

    def layer_edits(self, layer: int, heads: list[int]) -> list[tuple[str, Edit]]:
        return super().layer_edits(layer, heads)
