"""Head divergence (VHD), after "Cracking the Code of Hallucination in LVLMs with Vision-aware
Head Divergence" (He et al., ACL 2025, arXiv 2412.13949), for an image or any context segment.

The paper's definitions (Sec. 3, as its text states them; x_V the image, x_T the text prompt,
y_<t the answer so far, A_{l,i} head i of layer l's output):

    VHD_{l,i}(y_t) = d( A_{l,i}(y_t | y_<t, x_V, x_T),  A_{l,i}(y_t | y_<t, x_T) )      (VHD)
    T-VHD(y_t)     = (1/k) Σ_{(l,i) ∈ top-k of VHD_{·,·}(y_t)} VHD_{l,i}(y_t)          (T-VHD)

A_{l,i}(y_t | …) is the head's output at the step that generates y_t: the position of y_{t-1}
(of the last prompt token for y_1). Here A is `hook_z` (the head's output before the output
projection) and d the Euclidean distance (the paper's; "cosine" = 1 − cos is offered since L2
favours heads with large outputs). "vhd" rows are VHD_{l,i} averaged over every scored token
of every prompt; "t_vhd" rows are T-VHD per token.

Answers (`answer`): "generated", as in the paper: the answer is greedy-generated with the
segment (the image) in context, up to EOS or `max_new_tokens` (`probes.decoding.generate`);
both variants then run teacher-forced on the prompt plus that answer, "without" dropping the
segment (an image's tokens and pixels). "teacher_forced": the last `answer_tokens` tokens of
the prompt after the segment are the answer, read in place. "auto" (default): generated for
image prompts, teacher-forced for text ones. The segment is the image for image prompts (a
vision-language model), else a marked span `<segment>…</segment>` of the text, or by default
the first `segment_fraction` of each prompt after BOS.

Each prompt runs twice, with and without the segment. `prompts()` interleaves the two variants
and the engine keeps that order, so a pair usually shares a batch; a pair split across two
batches waits, per layer, as the answer-token outputs of one prompt ([answer, head, d_head]).
The `divergence_answers` side table holds each prompt's answer (ids, text, T-VHD per token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float

from probes.core import hook_names as hooks
from probes.core import schema
from probes.core.errors import PromptTooLongError
from probes.core.probe import Probe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Batch, Hook, ModelInfo, ProbeParams, TokenizedPrompt
from probes.decoding import eos_ids, generate
from probes.inputs.images import image_layout, prompt_image_inputs, split_image_prompt
from probes.inputs.prompts import Prompt, PromptSuite
from probes.inputs.segments import Layout, SegmentError, split_segment
from probes.models import LoadedModel, decode_text

DISTANCES = ("l2", "cosine")
ANSWERS = ("auto", "generated", "teacher_forced")


def head_divergence(
    with_segment: Float[torch.Tensor, "pos head d_head"],
    without_segment: Float[torch.Tensor, "pos head d_head"],
    distance: str = "l2",
) -> Float[torch.Tensor, "pos head"]:
    """d(z_with, z_without) per position and head: the paper's VHD equation."""
    if distance == "l2":
        return (with_segment - without_segment).norm(dim=-1)
    if distance == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(with_segment, without_segment, dim=-1)
    raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")


def top_k_mean(
    divergence: Float[torch.Tensor, "layer head pos"], k: int
) -> Float[torch.Tensor, " pos"]:
    """T-VHD: the mean of the k largest head divergences at each position (its equation)."""
    flat = divergence.flatten(0, 1)
    return flat.topk(min(k, flat.shape[0]), dim=0).values.mean(0)


@dataclass(frozen=True)
class DivergenceParams(ProbeParams):
    """Parameters of the divergence probe: the markers of the context segment (or the share of an
    unmarked prompt it is), the answer scored (generated, up to `max_new_tokens`, or the last
    `answer_tokens` of the prompt, teacher-forced), the distance and T-VHD's top k."""

    segment_open: str = "<segment>"
    segment_close: str = "</segment>"
    segment_fraction: float = 0.5  # unmarked prompts: this share of the tokens after BOS
    answer: str = "auto"  # generated (image prompts) / teacher_forced (text), or either for all
    max_new_tokens: int = 16  # a generated answer's length at most (EOS ends it sooner)
    answer_tokens: int = 32  # teacher-forced: the last N tokens after the segment are scored
    distance: str = "l2"
    top_k: int = 10  # T-VHD averages the k most divergent heads per token

    def check(self) -> None:
        self.require(self.distance in DISTANCES, "distance", f"one of {DISTANCES}")
        self.require(0 < self.segment_fraction < 1, "segment_fraction", "in (0, 1)")
        self.require(self.answer in ANSWERS, "answer", f"one of {ANSWERS}")
        self.require(self.max_new_tokens >= 1, "max_new_tokens", "at least 1")
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
        fields["n_answer"], tuple(fields.get("generated", ())),
    )  # fmt: skip


def answered_layout(layout: Layout, answer: tuple[int, ...]) -> Layout:
    """`layout` (its prompt with and without the segment) followed by a generated `answer`: both
    variants end with the answer but its last token, and the outputs at the last len(answer)
    positions, the ones that generated each answer token, are scored."""
    fed = answer[:-1]
    return Layout(
        layout.prompt_id, layout.with_segment + fed, layout.without_segment + fed, len(answer),
        answer,
    )  # fmt: skip


@register_probe
class DivergenceProbe(Probe[DivergenceParams]):
    """Rows: per head "vhd" (mean over prompts and answer tokens); per prompt and answer token
    "t_vhd" (no layer/head; prompt, position = the token's index in the sequence with its
    segment, token = its text). Side table `divergence_answers`: each prompt's answer."""

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
        self.decode_all: Callable[[list[int]], str] = str

    def bind(self, model: LoadedModel) -> None:
        tokenizer = model.tokenizer
        self.decode = lambda token: decode_text(tokenizer, [token])
        self.decode_all = lambda ids: decode_text(tokenizer, ids, skip_special_tokens=True)

    def generates(self, prompt: Prompt) -> bool:
        """Whether `prompt`'s answer is generated (else teacher-forced)."""
        if self.params.answer == "auto":
            return prompt.image is not None
        return self.params.answer == "generated"

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

    def generated_layout(
        self, model: LoadedModel, prompt: Prompt, where: str, max_tokens: int | None
    ) -> Layout:
        """The whole prompt with and without its segment, followed by the answer generated
        greedily with the segment (the image: its pixels too) in context."""
        pixels = None
        if prompt.image is None:
            layout = self.layout(model, prompt.id, prompt.text, where, max_tokens)
            with_segment, without_segment = layout.with_segment, layout.without_segment
        else:
            before, image, after = split_image_prompt(model, prompt, where)
            with_segment, without_segment = tuple(before + image + after), tuple(before + after)
            pixels = prompt_image_inputs(model, prompt.image, with_segment)
        limit = min(max_tokens or model.info.n_ctx, model.info.n_ctx)
        if len(with_segment) + self.params.max_new_tokens - 1 > limit:
            raise PromptTooLongError(
                f"{where}: its {len(with_segment)} tokens and an answer of up to "
                f"max_new_tokens={self.params.max_new_tokens} exceed the {limit} tokens allowed "
                "(max_tokens, the model's context); lower max_new_tokens or raise max_tokens"
            )
        stop = set(eos_ids(model))
        if model.vision is not None:  # an image token ends the answer: fed back, it would
            stop.add(model.vision.image_token_id)  # ask for image features nobody gave
        answer = generate(
            model, with_segment, image_inputs=pixels, max_new_tokens=self.params.max_new_tokens,
            stop=stop.__contains__,
        ).tokens  # fmt: skip
        if model.vision is not None and answer[-1:] == (model.vision.image_token_id,):
            answer = answer[:-1]
        if not answer:
            raise SegmentError(f"{where}: the model's answer begins with an image token")
        return answered_layout(Layout(prompt.id, with_segment, without_segment, 0), answer)

    def prompts(
        self, model: LoadedModel, suite: PromptSuite, max_tokens: int | None
    ) -> list[TokenizedPrompt]:
        layouts = []
        for prompt in suite.prompts:
            where = f"prompt {prompt.id!r} of {suite.source}"
            if self.generates(prompt):
                layout = self.generated_layout(model, prompt, where, max_tokens)
            elif prompt.image is None:
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
            for position, token, value in zip(*answer_tokens(layout), t_vhd.tolist(), strict=True):
                rows.append(
                    {
                        "metric": "t_vhd",
                        "prompt": layout.prompt_id,
                        "position": position,
                        "token": self.decode(token),
                        "value": value,
                    }
                )
        return rows

    def tables(self) -> dict[str, Any]:
        """`divergence_answers`: per prompt, how its answer was had, its token ids and text, and
        T-VHD per answer token (the dashboard's Vision page shows the generated answer)."""
        records = []
        for scores in self.scores.values():
            if len(scores.layers_done) != self.info.n_layers:
                continue
            layout = scores.layout
            positions, tokens = answer_tokens(layout)
            records.append(
                {
                    "prompt": layout.prompt_id,
                    "answer": "generated" if layout.generated else "teacher_forced",
                    "positions": positions,
                    "token_ids": tokens,
                    "tokens": [self.decode(token) for token in tokens],
                    "text": self.decode_all(tokens),
                    "t_vhd": top_k_mean(scores.divergence, self.params.top_k).tolist(),
                }
            )
        if not records:
            return {}
        return {schema.DIVERGENCE_ANSWERS_TABLE: pd.DataFrame(records)}


def answer_tokens(layout: Layout) -> tuple[list[int], list[int]]:
    """The scored answer tokens' positions in the sequence with the segment, and their ids: a
    generated answer's tokens follow the prompt; a teacher-forced one's are its last tokens."""
    if layout.generated:
        start = len(layout.with_segment) - layout.n_answer + 1  # the first answer token's place
        return list(range(start, start + layout.n_answer)), list(layout.generated)
    start = layout.answer_start("with")
    positions = list(range(start, start + layout.n_answer))
    return positions, [layout.with_segment[p] for p in positions]
