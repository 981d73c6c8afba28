"""Head divergence (VHD), after "Cracking the Code of Hallucination in LVLMs with Vision-aware
Head Divergence" (He et al., ACL 2025, arXiv 2412.13949), for any context segment of a text prompt.

    VHD_{l,h}(t) = d(z_{l,h}(t | with the segment), z_{l,h}(t | without it))
    T-VHD(t)     = mean of the top-k VHD_{l,h}(t) over all heads
where z_{l,h}(t) is head h's output at answer token t before the output projection (`hook_z`)
and d is the Euclidean distance (the paper's choice; "cosine" = 1 − cos is offered since L2
favours heads with large outputs). The paper removes the image; here the segment is any marked
span: `<segment>…</segment>` in the prompt text, or by default the first `segment_fraction` of
each prompt after BOS; for image prompts (a vision-language model) the segment is the image, as
in the paper: "without" drops its image tokens and pixels. Answer tokens are the last
`answer_tokens` tokens after the segment, teacher-forced (the paper scores tokens the model
generates).

Each prompt runs twice, with and without the segment. `prompts()` interleaves the two variants
and the engine keeps that order, so a pair usually shares a batch; a pair split across two
batches waits, per layer, as the answer-token outputs of one prompt ([answer, head, d_head]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from probes.core import hook_names as hooks
from probes.core.probe import Probe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, Hook, ModelInfo, ProbeParams, TokenizedPrompt
from probes.inputs.images import image_layout
from probes.inputs.prompts import PromptSuite
from probes.inputs.segments import Layout, SegmentError, split_segment
from probes.models import LoadedModel, decode_text

DISTANCES = ("l2", "cosine")


def head_divergence(
    with_segment: Float[torch.Tensor, "pos head d_head"],
    without_segment: Float[torch.Tensor, "pos head d_head"],
    distance: str = "l2",
) -> Float[torch.Tensor, "pos head"]:
    """d(z_with, z_without) per position and head."""
    if distance == "l2":
        return (with_segment - without_segment).norm(dim=-1)
    if distance == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(with_segment, without_segment, dim=-1)
    raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")


def top_k_mean(
    divergence: Float[torch.Tensor, "layer head pos"], k: int
) -> Float[torch.Tensor, " pos"]:
    """T-VHD: the mean of the k largest head divergences at each position."""
    flat = divergence.flatten(0, 1)
    return flat.topk(min(k, flat.shape[0]), dim=0).values.mean(0)


@dataclass(frozen=True)
class DivergenceParams(ProbeParams):
    """Parameters of the divergence probe: the markers of the context segment (or the share of an
    unmarked prompt it is), the answer tokens scored, the distance and T-VHD's top k."""

    segment_open: str = "<segment>"
    segment_close: str = "</segment>"
    segment_fraction: float = 0.5  # unmarked prompts: this share of the tokens after BOS
    answer_tokens: int = 32  # scored: the last N tokens after the segment
    distance: str = "l2"
    top_k: int = 10  # T-VHD averages the k most divergent heads per token

    def check(self) -> None:
        self.require(self.distance in DISTANCES, "distance", f"one of {DISTANCES}")
        self.require(0 < self.segment_fraction < 1, "segment_fraction", "in (0, 1)")
        self.require(self.answer_tokens >= 1, "answer_tokens", "at least 1")
        self.require(self.top_k >= 1, "top_k", "at least 1")
        self.require(bool(self.segment_open and self.segment_close), "segment_open", "non-empty")


@dataclass
class _Scores:
    layout: Layout
    divergence: torch.Tensor  # [layer, head, answer]
    layers_done: set[int] = field(default_factory=set)


def _layout(fields: dict[str, Any]) -> Layout:
    return Layout(
        fields["prompt_id"], tuple(fields["with_segment"]), tuple(fields["without_segment"]),
        fields["n_answer"],
    )  # fmt: skip


@register_probe
class DivergenceProbe(Probe[DivergenceParams]):
    """Rows: per head "vhd" (mean over prompts and answer tokens); per prompt and answer token
    "t_vhd" (no layer/head; prompt, position = token index in the prompt with its segment,
    token = its text)."""

    name = "divergence"
    Params = DivergenceParams
    description = "head divergence with/without a context segment (VHD, T-VHD)"
    totals = totals_of(scores="dict", pending="dict")

    def __init__(self, info: ModelInfo, params: DivergenceParams | None = None) -> None:
        super().__init__(info, params)
        self.variants: dict[str, tuple[Layout, str]] = {}  # engine prompt id → (layout, variant)
        self.scores: dict[str, _Scores] = {}
        # (prompt id, layer) → the first variant's answer outputs, waiting for the other's
        self.pending: dict[tuple[str, int], tuple[Layout, str, torch.Tensor]] = {}
        self.decode: Callable[[int], str] = str  # token text once bound to a model

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda token: decode_text(tokenizer, [token])

    def layout(
        self, model: LoadedModel, prompt_id: str, text: str, where: str, max_tokens: int | None
    ) -> Layout:
        """Token ids of one prompt with and without its segment."""
        p = self.params
        pieces = split_segment(text, p.segment_open, p.segment_close, where)
        if len(pieces) == 3:
            before = model.tokenize(pieces[0])
            segment = model.tokenize(pieces[1], prepend_bos=False)
            after = model.tokenize(pieces[2], prepend_bos=False)
        else:
            ids = model.tokenize(text)[:max_tokens]
            end = 1 + int((len(ids) - 1) * p.segment_fraction)
            before, segment, after = ids[:1], ids[1:end], ids[end:]
        if max_tokens is not None:
            after = after[: max(max_tokens - len(before) - len(segment), 0)]
        if not segment or not after:
            raise SegmentError(
                f"{where}: the segment has {len(segment)} tokens and {len(after)} follow it "
                f"(max_tokens={max_tokens}); both must be at least 1"
            )
        return Layout(
            prompt_id,
            tuple(before + segment + after),
            tuple(before + after),
            min(p.answer_tokens, len(after)),
        )

    def prompts(
        self, model: LoadedModel, suite: PromptSuite, max_tokens: int | None
    ) -> list[TokenizedPrompt]:
        layouts = []
        for prompt in suite.prompts:
            where = f"prompt {prompt.id!r} of {suite.source}"
            if prompt.image is None:
                layout = self.layout(model, prompt.id, prompt.text, where, max_tokens)
            else:
                answers = self.params.answer_tokens
                layout = image_layout(model, prompt, answers, max_tokens, where)
            layouts.append((layout, None if prompt.image is None else str(prompt.image)))
        layouts.sort(key=lambda pair: len(pair[0].with_segment))  # similar lengths share batches
        prompts = []
        for layout, image in layouts:
            for variant, tokens in (
                ("with", layout.with_segment),
                ("without", layout.without_segment),
            ):
                engine_id = f"{layout.prompt_id}#{variant}"
                self.variants[engine_id] = (layout, variant)
                prompts.append(
                    TokenizedPrompt(engine_id, tokens, image if variant == "with" else None)
                )
        return prompts

    def hooks(self, batch: Batch) -> list[Hook]:
        unknown = [i for i in batch.prompt_ids if i not in self.variants]
        if unknown:
            raise ValueError(f"probe {self.name!r} did not make the prompts {unknown}")

        def on_z(z: torch.Tensor, hook: Any) -> None:
            layer = hooks.layer_of(hook.name)
            for row, engine_id in enumerate(batch.prompt_ids):
                layout, variant = self.variants[engine_id]
                start = layout.answer_start(variant)
                answer = z[row, start : start + layout.n_answer].float().cpu()
                self.arrive(layout, layer, variant, answer)

        return [(hooks.attn(layer, "z"), on_z) for layer in range(self.info.n_layers)]

    def arrive(self, layout: Layout, layer: int, variant: str, answer: torch.Tensor) -> None:
        """One variant's answer outputs in `layer`: kept until the other variant's arrive (a
        pair split across two batches), then scored."""
        partner = self.pending.pop((layout.prompt_id, layer), None)
        if partner is None:
            self.pending[(layout.prompt_id, layer)] = (layout, variant, answer)
            return
        other = partner[2]
        with_z, without_z = (answer, other) if variant == "with" else (other, answer)
        self.record(layout, layer, head_divergence(with_z, without_z, self.params.distance))

    def record(self, layout: Layout, layer: int, divergence: torch.Tensor) -> None:
        scores = self.scores.get(layout.prompt_id)
        if scores is None:
            shape = (self.info.n_layers, self.info.n_heads, layout.n_answer)
            scores = self.scores[layout.prompt_id] = _Scores(layout, torch.zeros(shape))
        scores.divergence[layer] = divergence.T
        scores.layers_done.add(layer)

    def take(self) -> dict[str, Any]:
        state = super().take()
        scores = {
            key: {"layout": vars(s.layout), "divergence": s.divergence,
                  "layers_done": sorted(s.layers_done)}
            for key, s in state["scores"].items()
        }  # fmt: skip
        pending = [
            {"layout": vars(layout), "layer": layer, "variant": variant, "answer": answer}
            for (_, layer), (layout, variant, answer) in state["pending"].items()
        ]
        return {"scores": scores, "pending": pending}

    def restore(self, state: dict[str, Any]) -> None:
        self.scores = {
            key: _Scores(_layout(s["layout"]), s["divergence"], set(s["layers_done"]))
            for key, s in state["scores"].items()
        }
        self.pending = {}
        for entry in state["pending"]:
            layout = _layout(entry["layout"])
            self.pending[layout.prompt_id, entry["layer"]] = (
                layout, entry["variant"], entry["answer"]
            )  # fmt: skip

    def combine(self, earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
        """Pairs split between the two are scored as the hook would have scored them."""
        fold = type(self)(self.info, self.params)
        fold.restore(earlier)
        for entry in later["pending"]:
            layout = _layout(entry["layout"])
            fold.arrive(layout, entry["layer"], entry["variant"], entry["answer"])
        state = fold.take()
        twice = [key for key in later["scores"] if key in state["scores"]]
        if twice:
            raise ValueError(f"probe {self.name!r}: prompt {twice[0]!r} seen twice")
        return {"scores": {**state["scores"], **later["scores"]}, "pending": state["pending"]}

    def rows(self) -> list[dict[str, Any]]:
        complete = [s for s in self.scores.values() if len(s.layers_done) == self.info.n_layers]
        if not complete:
            return []
        total = torch.cat([s.divergence for s in complete], dim=-1)  # [layer, head, all answers]
        vhd = total.double().mean(-1)
        rows: list[dict[str, Any]] = [
            {"metric": "vhd", "layer": layer, "head": head, "value": vhd[layer, head].item()}
            for layer in range(self.info.n_layers)
            for head in range(self.info.n_heads)
        ]
        for scores in complete:
            layout = scores.layout
            t_vhd = top_k_mean(scores.divergence, self.params.top_k)
            start = layout.answer_start("with")
            for offset, value in enumerate(t_vhd.tolist()):
                position = start + offset
                token = self.decode(layout.with_segment[position])
                rows.append(
                    {
                        "metric": "t_vhd",
                        "prompt": layout.prompt_id,
                        "position": position,
                        "token": token,
                        "value": value,
                    }
                )
        return rows
