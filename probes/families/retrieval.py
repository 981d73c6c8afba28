"""Retrieval heads: Wu et al. 2024, nightdessert/Retrieval_Head (`retrieval_calculate`).

Greedy decoding with a KV cache on needle-in-a-haystack prompts (probes/niah.py). At every step
that generates token w, head h scores a hit when its top-1 attended key lies inside the answer
span and the prompt token there is w. A sample's score is hits / span length (no de-duplication:
a repeated needle token can be hit twice, as in the authors' code). A head's retrieval score is the
mean over the samples the model answered — ROUGE-1 recall of the answer > 0.5 — and failed
samples are dropped, not counted as 0. Only the single query row of each decoding step is read
(the prefill is never hooked), and of it only each head's arg-max key is kept.

Decoding and answer scoring (ROUGE-1 recall, without stemming) are `probes.decoding.decode_niah`,
the loop the NIAH sweep task and retrieval-head masking share; this probe adds the hit counting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from probes import bridge
from probes import decoding as decode
from probes.core import hook_names as hooks
from probes.core import schema
from probes.core.probe import GenerativeProbe, totals_of
from probes.core.registry import register_probe
from probes.core.types import Hook, ProbeParams
from probes.families import retrieval_decode
from probes.inputs import niah
from probes.models import LoadedModel, ModelInfo, decode_text

SAMPLES_TABLE = "niah_samples"


def top1_keys(
    rows: Float[torch.Tensor, "head k_pos"], n_positions: int
) -> Int[torch.Tensor, " head"]:
    """Absolute position of each head's most attended key (the first one on a tie).

    A row shorter than the sequence holds the most recent keys (a sliding-window layer's cache
    keeps only its window), so its index i is position n_positions − len + i.
    """
    return rows.argmax(-1) + (n_positions - rows.shape[-1])


def retrieval_hits(
    keys: Int[torch.Tensor, "*heads"],
    token: int,
    prompt: Int[torch.Tensor, " pos"],
    span: tuple[int, int],
) -> Bool[torch.Tensor, "*heads"]:
    """Heads whose top-1 key lies in the answer span [start, end) and holds the generated token."""
    start, end = span
    inside = (keys >= start) & (keys < end)
    at_key = prompt[keys.clamp(0, len(prompt) - 1)]
    return inside & (at_key == token)


class TopKeyRecorder:
    """Decoding-step hooks that keep each head's top-1 key of the single query row, nothing else.

    A pattern with more than one query (a prefill) or more than one row is refused rather than
    read, so the prefill can never leak into the score.
    """

    def __init__(self, info: ModelInfo) -> None:
        self.n_layers = info.n_layers
        self.index = torch.zeros(info.n_layers, info.n_heads, dtype=torch.long)
        self.row_length = torch.zeros(info.n_layers, dtype=torch.long)
        self.fresh = torch.zeros(info.n_layers, dtype=torch.bool)

    def hooks(self) -> list[Hook]:
        return [
            (hooks.attn(layer, "pattern"), self._record(layer)) for layer in range(self.n_layers)
        ]

    def _record(self, layer: int):
        def record(pattern: torch.Tensor, hook: Any) -> None:
            if pattern.shape[0] != 1 or pattern.shape[-2] != 1:
                raise RuntimeError(
                    f"{hook.name}: the retrieval score reads one query row per decoding step, "
                    f"got a pattern of shape {tuple(pattern.shape)} (a prefill or a batch)"
                )
            self.take(layer, pattern[0, :, 0].argmax(-1), pattern.shape[-1])

        return record

    def take(self, layer: int, index: torch.Tensor, row_length: int) -> None:
        """Keep one step's arg-max key per head of `layer`, over a row of `row_length` keys
        (the fused decode calls this directly, without hooks)."""
        self.index[layer] = index.cpu()
        self.row_length[layer] = row_length
        self.fresh[layer] = True

    def keys(self, n_positions: int) -> Int[torch.Tensor, "layer head"]:
        """Absolute top-1 key per (layer, head) of the step just run over `n_positions` keys."""
        if not self.fresh.all():
            missing = (~self.fresh).nonzero().flatten().tolist()
            raise RuntimeError(f"no attention pattern was seen in layers {missing} this step")
        self.fresh[:] = False
        return self.index + (n_positions - self.row_length)[:, None]


@dataclass(frozen=True)
class SampleOutcome:
    generated: tuple[int, ...]
    response: str
    recall: float
    hits: torch.Tensor  # [layer, head] number of hit steps


RETRIEVAL_PATHS = ("auto", "bridge", "fused")


def run_sample(
    model: LoadedModel,
    sample: niah.NiahSample,
    *,
    max_new_tokens: int,
    stop: Callable[[int], bool],
    prefill_hooks: tuple[Hook, ...] = (),
    decode_hooks: tuple[Hook, ...] = (),
    path: str = "bridge",
) -> SampleOutcome:
    """Greedy-decode one sample and count each head's retrieval hits along the way.

    `path`: "bridge" decodes through TransformerLens with hooks (`prefill_hooks` /
    `decode_hooks` run before the recorder; tests plant patterns so); "fused" prefills with SDPA
    and reads only each step's last row (`retrieval_decode`), the same scores at a fraction of
    the cost; "auto" takes "fused" unless hooks are given or the model is not supported.
    """
    chosen = choose_path(model, path, bool(prefill_hooks or decode_hooks))
    recorder = TopKeyRecorder(model.info)
    prompt = torch.tensor(sample.tokens)
    hits = torch.zeros(model.info.n_layers, model.info.n_heads)

    def count(step: int, token: int) -> None:
        # Step s reads keys 0 … P − 1 + s: the prompt and the tokens generated before it.
        keys = recorder.keys(len(sample.tokens) + step)
        hits.add_(retrieval_hits(keys, token, prompt, sample.answer_span).float())

    if chosen == "fused":
        generated = retrieval_decode.fused_greedy_decode(
            model,
            sample.tokens,
            max_new_tokens=max_new_tokens,
            stop=stop,
            sink=recorder.take,
            on_step=count,
        )
        response = decode_text(model.tokenizer, generated, skip_special_tokens=True).strip()
        recall = decode.rouge1_recall(sample.needle.answer, response)
        return SampleOutcome(tuple(generated), response, recall, hits)
    (answer,) = decode.decode_niah(
        model,
        sample,
        max_new_tokens=max_new_tokens,
        stop=stop,
        fwd_hooks=(*decode_hooks, *recorder.hooks()),
        prefill_hooks=prefill_hooks,
        on_step=lambda step, tokens: count(step, int(tokens[0])),
    )
    return SampleOutcome(answer.generated, answer.response, answer.recall, hits)


def check_path(path: str) -> str:
    if path not in RETRIEVAL_PATHS:
        raise niah.NiahError(f"RetrievalParams.path must be one of {RETRIEVAL_PATHS}, got {path!r}")
    return path


def choose_path(model: LoadedModel, path: str, hooked: bool = False) -> str:
    """The decode path for `path` on `model`: "auto" is "fused" where it can run (no hooks to
    honour, a supported model), else "bridge"; "fused" where it cannot is refused."""
    check_path(path)
    if path == "bridge":
        return path
    problem = None
    if hooked or bridge.hooked_points(model):
        problem = "hooks are attached (the fused decode bypasses the bridge)"
    elif not retrieval_decode.supports(model):
        problem = f"model {model.info.name!r} is not supported by the fused decode"
    if problem is None:
        return "fused"
    if path == "fused":
        raise niah.NiahError(f"RetrievalParams.path='fused': {problem}; use path='bridge'")
    return "bridge"


@dataclass(frozen=True)
class RetrievalParams(ProbeParams):
    """Parameters of the retrieval probe: the needle-in-a-haystack grid (lengths × depths ×
    needles per cell), the needle and haystack sources, the prompt template, the decode length
    and the ROUGE-1 recall that counts a sample as answered (Wu et al.'s defaults)."""

    lengths: tuple[int, ...] = (256, 512, 1024, 2048)  # prompt lengths in tokens
    depths: tuple[int, ...] = (0, 25, 50, 75, 100)  # needle depth, percent of the haystack
    needles_per_cell: int = 1  # needles per (length, depth); they rotate through the grid
    needles: str = str(niah.DEFAULT_NEEDLES)  # JSONL of needle facts
    haystack: str = niah.STDLIB_DOCS  # "stdlib-docs", a text file, or a prompt JSONL file
    template: str = niah.DEFAULT_TEMPLATE
    max_new_tokens: int = 50  # the authors' decode length
    recall_threshold: float = 0.5  # a sample counts as answered when ROUGE-1 recall > this
    path: str = "auto"  # decode: "fused" (SDPA prefill, last rows only), "bridge", or auto

    def check(self) -> None:
        niah.check_grid(self)
        check_path(self.path)


def check_context(info: ModelInfo, params: RetrievalParams) -> None:
    """Every prompt length plus the decoded answer must fit the model's context."""
    limit = info.n_ctx - params.max_new_tokens
    too_long = [length for length in params.lengths if length > limit]
    if too_long:
        raise niah.NiahError(
            f"RetrievalParams.lengths {list(too_long)} exceed {limit} tokens: model "
            f"{info.name!r} has a {info.n_ctx}-token context and "
            f"max_new_tokens={params.max_new_tokens}"
        )


def niah_samples(model: LoadedModel, params: RetrievalParams) -> list[niah.NiahSample]:
    """The probe's needle-in-a-haystack grid for `model`, checked against its context."""
    check_context(model.info, params)
    builder = niah.NiahBuilder(model, niah.load_haystack(params.haystack), params.template)
    needles = niah.load_needles(params.needles)
    return niah.grid(builder, needles, params.lengths, params.depths, params.needles_per_cell)


@register_probe
class RetrievalProbe(GenerativeProbe[RetrievalParams]):
    """Retrieval heads (Wu et al. 2024): greedy decoding on NIAH prompts; rows per head
    "retrieval_score" (copy-from-needle hits / needle length over answered samples) and per
    (length, depth) "niah_accuracy"; side table "niah_samples" with each sample's outcome."""

    name = "retrieval"
    Params = RetrievalParams
    description = (
        "retrieval heads (Wu et al. 2024): greedy decoding on needle-in-a-haystack prompts, "
        "copy-from-needle score per head; NIAH accuracy per (length, depth)"
    )
    totals = totals_of(score_sum="sum", n_answered="sum", records="list")

    def __init__(self, info: ModelInfo, params: RetrievalParams | None = None) -> None:
        super().__init__(info, params)
        check_context(info, self.params)  # before any pass, not when decoding starts
        self.score_sum = torch.zeros(info.n_layers, info.n_heads, dtype=torch.float64)
        self.n_answered = 0
        self.records: list[dict[str, Any]] = []

    def generate(self, model: LoadedModel, *, progress: bool = True) -> None:
        samples = niah_samples(model, self.params)
        stop = decode.StopRule(model.tokenizer)
        desc = f"retrieval {model.info.name}"
        bar = tqdm(samples, unit="sample", desc=desc, disable=not progress)
        for sample in bar:
            outcome = run_sample(
                model,
                sample,
                max_new_tokens=self.params.max_new_tokens,
                stop=stop,
                path=self.params.path,
            )
            self.add(sample, outcome)
            bar.set_postfix(answered=f"{self.n_answered}/{len(self.records)}")

    def add(self, sample: niah.NiahSample, outcome: SampleOutcome) -> None:
        """Fold one decoded sample in: its hits count only if the model answered."""
        start, end = sample.answer_span
        correct = decode.answered(outcome.recall, self.params.recall_threshold)
        if correct:
            self.score_sum += outcome.hits.double() / (end - start)
            self.n_answered += 1
        self.records.append(
            {
                "sample_id": sample.id,
                "needle_id": sample.needle.id,
                "length": sample.length,
                "depth": sample.depth,
                "n_tokens": len(sample.tokens),
                "answer_start": start,
                "answer_end": end,
                "question": sample.needle.question,
                "answer": sample.needle.answer,
                "response": outcome.response,
                "n_generated": len(outcome.generated),
                "recall": outcome.recall,
                "correct": correct,
            }
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        return {SAMPLES_TABLE: pd.DataFrame(self.records)}

    def rows(self) -> list[dict[str, Any]]:
        """retrieval_score per head (only if some sample was answered); niah_accuracy and
        niah_recall per NIAH cell (length, depth) and overall (condition "all")."""
        rows: list[dict[str, Any]] = []
        if self.n_answered:
            scores = self.score_sum / self.n_answered
            for layer in range(self.info.n_layers):
                for head in range(self.info.n_heads):
                    value = scores[layer, head].item()
                    rows.append(
                        {"metric": "retrieval_score", "layer": layer, "head": head, "value": value}
                    )
        if not self.records:
            return rows
        table = pd.DataFrame(self.records)
        measures = (("niah_accuracy", "correct"), ("niah_recall", "recall"))
        for (length, depth), cell in table.groupby(["length", "depth"], sort=True):
            where = {"length": int(length), "depth": int(depth)}
            rows += [
                {**where, "metric": metric, "value": float(cell[column].mean())}
                for metric, column in measures
            ]
        rows += [
            {
                "metric": metric,
                "condition": schema.OVERALL_CONDITION,
                "value": float(table[c].mean()),
            }
            for metric, c in measures
        ]
        return rows
