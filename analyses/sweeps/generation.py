"""The "generation" sweep task: how an intervention (VHR above all) changes what a model
generates for image (or text) prompts.

Each prompt of a JSONL suite (default: the committed image prompts) is answered greedily
(`probes.decoding.generate`, up to EOS or `max_new_tokens`) once clean, then under each edit:

  same_answer      share of prompts whose edited answer equals the clean one; 1 = no change
  token_agreement  mean share of the clean answer's tokens the edited answer repeats at the
                   same place (a shorter answer disagrees where it has no token)
  clean_logprob    mean log-probability per token of the clean answer under the edited model
                   (teacher-forced, with the image); how far the edit moves the model off it

None of these says whether an answer is right (that needs labelled data, e.g. CHAIR or POPE
as in the paper); they measure how much the edit changes generation, the check a sweep of
VHR's α or head count needs first. The edits act on the prefill and on every decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from analyses.sweeps.tasks import Task, TaskError, TaskParams, register_task
from probes import bridge
from probes.core.types import Hook
from probes.models import LoadedModel

IMAGE_PROMPTS = Path(__file__).resolve().parents[2] / "data" / "prompts" / "images" / "images.jsonl"


@dataclass(frozen=True)
class GenerationParams(TaskParams):
    prompts: str = str(IMAGE_PROMPTS)  # a prompt JSONL file (image prompts or text)
    max_new_tokens: int = 8

    def check(self) -> None:
        self.require(self.max_new_tokens >= 1, "max_new_tokens", "at least 1")
        self.require(Path(self.prompts).is_file(), "prompts", "a prompt JSONL file")


@dataclass(frozen=True)
class _Prompt:
    tokens: tuple[int, ...]
    inputs: dict[str, Any]  # an image prompt's pixels (and what its architecture reads with them)
    clean: tuple[int, ...]  # the clean greedy answer


class GenerationTask(Task[GenerationParams]):
    name = "generation"
    Params = GenerationParams
    higher_is_better: ClassVar[dict[str, bool]] = {
        "same_answer": True,
        "token_agreement": True,
        "clean_logprob": True,
    }
    objective = "clean_logprob"
    description = "how an edit changes greedy answers to image prompts (VHR's effect)"

    def __init__(self, params: GenerationParams | None = None) -> None:
        super().__init__(params)
        self._clean: tuple[str, list[_Prompt]] | None = None

    def _prompts(self, model: LoadedModel) -> list[_Prompt]:
        """The prompts' tokens, pixels and clean answers, made once per model."""
        from probes.decoding import generate
        from probes.inputs.images import prompt_image_inputs, tokenize_image_prompt
        from probes.inputs.prompts import load_jsonl

        if self._clean is None or self._clean[0] != model.info.name:
            suite = load_jsonl(self.params.prompts)
            prepared = []
            for prompt in suite.prompts:
                where = f"task 'generation': prompt {prompt.id!r} of {suite.source}"
                if prompt.image is None:
                    tokens, inputs = tuple(model.tokenize(prompt.text)), {}
                else:
                    tokens = tokenize_image_prompt(model, prompt, None, where).tokens
                    inputs = prompt_image_inputs(model, prompt.image, tokens)
                if len(tokens) < 2:
                    raise TaskError(f"{where}: a prompt to generate from needs 2 tokens or more")
                clean = generate(
                    model, tokens, max_new_tokens=self.params.max_new_tokens,
                    image_inputs=inputs,
                ).tokens  # fmt: skip
                prepared.append(_Prompt(tokens, inputs, clean))
            self._clean = (model.info.name, prepared)
        return self._clean[1]

    def evaluate(self, model: LoadedModel, fwd_hooks: list[Hook]) -> dict[str, float]:
        from probes.decoding import generate

        same = agreement = logprob = 0.0
        prompts = self._prompts(model)
        for prompt in prompts:
            edited = generate(
                model, prompt.tokens, max_new_tokens=self.params.max_new_tokens,
                image_inputs=prompt.inputs, fwd_hooks=fwd_hooks,
            ).tokens  # fmt: skip
            same += edited == prompt.clean
            agreement += sum(a == b for a, b in zip(edited, prompt.clean, strict=False)) / len(
                prompt.clean
            )
            logprob += self._clean_logprob(model, prompt, fwd_hooks)
        n = len(prompts)
        return {"same_answer": same / n, "token_agreement": agreement / n,
                "clean_logprob": logprob / n}  # fmt: skip

    @staticmethod
    def _clean_logprob(model: LoadedModel, prompt: _Prompt, fwd_hooks: list[Hook]) -> float:
        """Mean log-probability of the clean answer's tokens, teacher-forced under the hooks."""
        sequence = prompt.tokens + prompt.clean[:-1]
        ids = torch.tensor([list(sequence)], device=model.device)
        logits = bridge.forward(model, ids, fwd_hooks, **prompt.inputs)
        start = len(prompt.tokens) - 1  # the position that predicts the first answer token
        steps = logits[0, start : start + len(prompt.clean)].float().log_softmax(-1)
        answer = torch.tensor(prompt.clean, device=steps.device)
        return float(steps.gather(-1, answer[:, None]).mean())


register_task(GenerationTask)
