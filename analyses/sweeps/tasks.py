"""Task metrics for interventions: how well does the model still do the job?

A `Task` turns a model plus forward hooks into named measures. `ForwardTask`s are scored from
the logits of one teacher-forced forward pass per batch, which lets a sweep reuse the clean
prefix and stack several interventions in one pass:

  lm   mean next-token cross-entropy on prose (the standard-library docs suite); lower is better
  ioi  logit(correct) − logit(incorrect) at the last token of IOI-style prompt pairs, and the
       share of pairs where it is positive; higher is better

  niah NIAH accuracy (and mean ROUGE-1 recall) of greedy answers on the retrieval probe's
       needle-in-a-haystack grid (probes.retrieval); as the retrieval-head authors do, the
       prefill runs clean and interventions act while decoding; higher is better

Other tasks plug in with `register_task`: a `Task` needs only `evaluate(model, fwd_hooks)`;
overriding `evaluate_stacked` lets several interventions share passes (NIAH decodes them as
rows of one batch). Tasks that are not `ForwardTask`s get no prefix reuse or attribution.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from jaxtyping import Float, Int

from analyses.interventions.kinds import Intervention, hooks, stacked_hooks
from analyses.sweeps.ioi import PromptPair, ioi_pairs, load_pairs
from probes import bridge
from probes.core import hook_names as hook_names
from probes.core.errors import ConfigError, HeadlabError
from probes.core.types import Batch, Hook, TokenizedPrompt, ValidatedParams
from probes.engine import batches
from probes.inputs import niah
from probes.inputs.prompts import stdlib_docs_suite
from probes.models import LoadedModel


class TaskError(HeadlabError, ValueError):
    """A task cannot run as configured; the message names the task and the parameter."""


@dataclass(frozen=True)
class TaskParams(ValidatedParams):
    """A task's frozen parameters: typed and range-checked when built (see ValidatedParams)."""


@dataclass(frozen=True)
class TaskBatch:
    batch: Batch
    answers: Int[torch.Tensor, "batch 2"] | None = None  # (correct, incorrect) token ids
    read_at: Int[torch.Tensor, "batch n_read"] | None = None  # positions whose logits matter


P = TypeVar("P", bound=TaskParams)


class Task(ABC, Generic[P]):
    """A task; `evaluate` is all a sweep needs from it.

    Generic in its parameter class: `class LMLossTask(ForwardTask[LMParams])` with
    `Params = LMParams` makes `self.params` an `LMParams`.
    """

    name: ClassVar[str]
    Params: type[P]  # set once per class (a ClassVar cannot be generic)
    higher_is_better: ClassVar[dict[str, bool]]  # measure -> direction
    objective: ClassVar[str]  # the measure attribution patching differentiates
    description: ClassVar[str] = ""

    def __init__(self, params: P | None = None) -> None:
        self.params: P = params if params is not None else self.Params()

    @abstractmethod
    def evaluate(self, model: LoadedModel, fwd_hooks: list[Hook]) -> dict[str, float]:
        """The task's measures with `fwd_hooks` active."""

    def evaluate_stacked(
        self, model: LoadedModel, copies: Sequence[Sequence[Intervention]]
    ) -> list[dict[str, float]]:
        """The measures under each list of interventions (default: one evaluation each)."""
        return [self.evaluate(model, hooks(list(each), model.info)) for each in copies]


class ForwardTask(Task[P]):
    """A task scored from the logits of one forward pass per batch."""

    @abstractmethod
    def prepare(self, model: LoadedModel, batch_size: int) -> list[TaskBatch]:
        """The task's batches for `model`, in a fixed order."""

    @abstractmethod
    def score(
        self, logits: Float[torch.Tensor, "batch n_read vocab"], task_batch: TaskBatch
    ) -> dict[str, Float[torch.Tensor, ""]]:
        """Each measure's sum over the batch; divide by the summed `weight` for the mean."""

    @abstractmethod
    def weight(self, task_batch: TaskBatch) -> float:
        """How many items (tokens, prompts) the batch's sums are over."""

    def evaluate(self, model: LoadedModel, fwd_hooks: list[Hook]) -> dict[str, float]:
        """One full forward per batch; the plain path a sweep's fast path must agree with."""
        totals: dict[str, float] = {}
        weight = 0.0
        for task_batch in self.prepare(model, batch_size=8):
            hooks = [*fwd_hooks, *read_positions_hooks(task_batch.read_at, copies=1)]
            batch = task_batch.batch
            logits = bridge.forward(model, batch.tokens, hooks, attention_mask=batch.attention_mask)
            for measure, value in self.score(logits, task_batch).items():
                totals[measure] = totals.get(measure, 0.0) + float(value)
            weight += self.weight(task_batch)
        return {measure: total / weight for measure, total in totals.items()}


def read_positions_hooks(read_at: torch.Tensor | None, copies: int) -> list[Hook]:
    """A hook keeping only the positions whose logits a task reads, before the unembedding, so
    the vocabulary projection runs on those alone. `read_at` is per row of one copy."""
    if read_at is None:
        return []
    index = read_at.repeat(copies, 1)

    def pick(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid.gather(1, index[..., None].expand(-1, -1, resid.shape[-1]).to(resid.device))

    return [(hook_names.final_norm("out"), pick)]


@dataclass(frozen=True)
class LMParams(TaskParams):
    n_prompts: int = 4
    max_tokens: int = 128  # BOS included

    def check(self) -> None:
        self.require(self.n_prompts >= 1, "n_prompts", "at least 1")
        self.require(self.max_tokens >= 2, "max_tokens", "at least 2")


class LMLossTask(ForwardTask[LMParams]):
    name = "lm"
    Params = LMParams
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False}
    objective = "loss"
    description = "mean next-token cross-entropy on standard-library prose"

    def prepare(self, model: LoadedModel, batch_size: int) -> list[TaskBatch]:
        params = self.params
        if params.n_prompts < 1 or params.max_tokens < 2:
            raise TaskError(f"task lm needs n_prompts >= 1 and max_tokens >= 2, got {params}")
        suite = stdlib_docs_suite(n_prompts=params.n_prompts)
        prompts = [
            TokenizedPrompt(p.id, tuple(model.tokenize(p.text)[: params.max_tokens]))
            for p in suite.prompts
        ]
        return [TaskBatch(b) for b in batches(prompts, batch_size, model.pad_id, model.device)]

    def score(self, logits: torch.Tensor, task_batch: TaskBatch) -> dict[str, torch.Tensor]:
        batch = task_batch.batch
        targets = batch.tokens[:, 1:]
        real = batch.attention_mask[:, 1:].bool()  # a target is real iff its position is
        log_probs = logits[:, :-1].float().log_softmax(-1)
        picked = log_probs.gather(-1, targets[..., None])[..., 0]
        return {"loss": -(picked * real).sum()}

    def weight(self, task_batch: TaskBatch) -> float:
        return float(task_batch.batch.attention_mask[:, 1:].sum())


@dataclass(frozen=True)
class IOIParams(TaskParams):
    n_prompts: int = 32
    seed: int = 0
    path: str | None = None  # a JSONL file of pairs instead of the built-in templates

    def check(self) -> None:
        self.require(self.n_prompts >= 1, "n_prompts", "at least 1")
        self.require(self.path is None or Path(self.path).is_file(), "path", "an existing file")


class LogitDiffTask(ForwardTask[IOIParams]):
    name = "ioi"
    Params = IOIParams
    higher_is_better: ClassVar[dict[str, bool]] = {"logit_diff": True, "accuracy": True}
    objective = "logit_diff"
    description = "logit difference on IOI-style prompt pairs (correct − incorrect name)"

    def __init__(
        self, params: IOIParams | None = None, pairs: tuple[PromptPair, ...] | None = None
    ) -> None:
        super().__init__(params)
        self._pairs = pairs

    def pairs(self) -> tuple[PromptPair, ...]:
        if self._pairs is not None:
            return self._pairs
        if self.params.path is not None:
            return load_pairs(Path(self.params.path))
        return ioi_pairs(self.params.n_prompts, self.params.seed)

    def prepare(self, model: LoadedModel, batch_size: int) -> list[TaskBatch]:
        pairs = self.pairs()
        answers = {}
        for pair in pairs:
            good = model.tokenize(pair.correct, prepend_bos=False)[:1]
            bad = model.tokenize(pair.incorrect, prepend_bos=False)[:1]
            if not good or not bad or good == bad:
                raise TaskError(
                    f"task {self.name}: pair {pair.id!r} needs answers whose first tokens differ "
                    f"on model {model.info.name!r}; got {pair.correct!r} and {pair.incorrect!r}"
                )
            answers[pair.id] = (good[0], bad[0])
        prompts = [TokenizedPrompt(pair.id, tuple(model.tokenize(pair.text))) for pair in pairs]
        prepared = []
        for batch in batches(prompts, batch_size, model.pad_id, model.device):
            ids = torch.tensor([answers[pid] for pid in batch.prompt_ids], device=model.device)
            prepared.append(TaskBatch(batch, ids, (batch.lengths - 1)[:, None]))
        return prepared

    def score(self, logits: torch.Tensor, task_batch: TaskBatch) -> dict[str, torch.Tensor]:
        if task_batch.answers is None:
            raise TaskError(f"task {self.name}: a batch without answer ids (not from prepare)")
        last = logits[:, -1].float()  # read_at keeps only the last real position
        picked = last.gather(-1, task_batch.answers)
        diff = picked[:, 0] - picked[:, 1]
        return {"logit_diff": diff.sum(), "accuracy": (diff > 0).float().sum()}

    def weight(self, task_batch: TaskBatch) -> float:
        return float(len(task_batch.batch.lengths))


@dataclass(frozen=True)
class NiahParams(TaskParams):
    lengths: tuple[int, ...] = (256,)  # prompt lengths in tokens
    depths: tuple[int, ...] = (0, 50, 100)  # needle depth, percent of the haystack
    needles_per_cell: int = 1
    max_new_tokens: int = 24
    recall_threshold: float = 0.5  # answered when ROUGE-1 recall > this (the authors' rule)
    needles: str | None = None  # None: the retrieval probe's defaults
    haystack: str | None = None
    template: str | None = None

    def check(self) -> None:
        niah.check_grid(self)


class NiahTask(Task[NiahParams]):
    name = "niah"
    Params = NiahParams
    higher_is_better: ClassVar[dict[str, bool]] = {"accuracy": True, "recall": True}
    objective = "accuracy"
    description = "needle-in-a-haystack accuracy of greedy answers (retrieval probe's grid)"

    def __init__(self, params: NiahParams | None = None) -> None:
        super().__init__(params)
        self._prefilled: tuple[str, list[tuple[Any, Any]]] | None = None

    def _samples(self, model: LoadedModel) -> list[tuple[Any, Any]]:
        """(sample, clean KV cache of all but its last token), prefilled once per model."""
        from probes import decoding as decode
        from probes.families.retrieval import RetrievalParams, niah_samples

        if self._prefilled is None or self._prefilled[0] != model.info.name:
            p = self.params
            given = {k: getattr(p, k) for k in ("needles", "haystack", "template") if getattr(p, k)}
            params = RetrievalParams(
                lengths=tuple(p.lengths), depths=tuple(p.depths),
                needles_per_cell=p.needles_per_cell, max_new_tokens=p.max_new_tokens, **given,
            )  # fmt: skip
            samples = niah_samples(model, params)
            self._prefilled = (
                model.info.name,
                [(s, decode.prefill(model, s.tokens)) for s in samples],
            )
        return self._prefilled[1]

    def evaluate(self, model: LoadedModel, fwd_hooks: list[Hook]) -> dict[str, float]:
        return self._decode(model, fwd_hooks, n_rows=1)[0]

    def evaluate_stacked(
        self, model: LoadedModel, copies: Sequence[Sequence[Intervention]]
    ) -> list[dict[str, float]]:
        return self._decode(model, stacked_hooks(copies, model.info), n_rows=len(copies))

    def _decode(
        self, model: LoadedModel, fwd_hooks: list[Hook], n_rows: int
    ) -> list[dict[str, float]]:
        from probes import decoding as decode

        stop = decode.StopRule(model.tokenizer)
        recall = torch.zeros(n_rows, dtype=torch.float64)
        correct = torch.zeros(n_rows, dtype=torch.float64)
        samples = self._samples(model)
        for sample, cache in samples:
            answers = decode.decode_niah(
                model, sample, max_new_tokens=self.params.max_new_tokens, stop=stop,
                fwd_hooks=fwd_hooks, n_rows=n_rows, cache=copy.deepcopy(cache),
            )  # fmt: skip
            for row, answer in enumerate(answers):
                recall[row] += answer.recall
                correct[row] += decode.answered(answer.recall, self.params.recall_threshold)
        n = len(samples)
        return [
            {"accuracy": float(c / n), "recall": float(r / n)}
            for c, r in zip(correct, recall, strict=True)
        ]


TASKS: dict[str, type[Task]] = {}
TaskClass = TypeVar("TaskClass", bound=type[Task])


def register_task(cls: TaskClass) -> TaskClass:
    """Add a task to the registry; duplicate names are refused."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is already registered by {TASKS[cls.name]}")
    TASKS[cls.name] = cls
    return cls


register_task(LMLossTask)
register_task(LogitDiffTask)
register_task(NiahTask)


def make_task(name: str, params: dict[str, Any] | None = None, where: str = "") -> Task:
    """A registered task built from a plain dict of parameters; errors name `where` it came from."""
    if name not in TASKS:
        raise TaskError(
            f"{where}unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}"
        )
    cls = TASKS[name]
    params = dict(params or {})
    known = {f.name for f in fields(cls.Params)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TaskError(
            f"{where}task {name!r} has no parameter(s) {unknown}; known: {sorted(known)}"
        )
    try:
        return cls(cls.Params(**params))
    except ConfigError as error:
        raise TaskError(f"{where}task {name!r}: {error}") from None
