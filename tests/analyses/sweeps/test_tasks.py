"""Known answers for the forward tasks: planted logits whose loss and logit difference are exact.

(The NIAH task's planted answers are in test_runner.py, next to the sweep that stacks its rows.)
"""

import math

import pytest
import torch

from analyses.sweeps.ioi import PromptPair
from analyses.sweeps.tasks import LogitDiffTask, make_task
from probes import bridge
from probes.core import hook_names

PAIRS = (
    PromptPair("a", "red the cat went to the park", "red", "blue"),
    PromptPair("b", "blue a dog went to the house of", "blue", "green"),
    PromptPair("c", "green and the ball was in the", "green", "red"),
)


def planted_logits(boost: dict[int, float] | None = None):
    """A hook replacing the logits by zeros, plus `boost` on some token ids."""

    def hook(logits: torch.Tensor, hook) -> torch.Tensor:
        planted = torch.zeros_like(logits)
        for token, value in (boost or {}).items():
            planted[..., token] = value
        return planted

    return (hook_names.logits(), hook)


def test_planted_uniform_logits_give_lm_loss_log_vocab(tiny_model):
    task = make_task("lm", {"n_prompts": 2, "max_tokens": 16})
    measures = task.evaluate(tiny_model, [planted_logits()])
    assert measures["loss"] == pytest.approx(math.log(bridge.vocab_size(tiny_model)), rel=1e-6)
    # The negative case: the random model's own logits are not uniform.
    clean = task.evaluate(tiny_model, [])["loss"]
    assert clean != pytest.approx(measures["loss"], rel=1e-3)


def test_planted_logits_give_the_ioi_logit_difference_exactly(tiny_model):
    task = LogitDiffTask(pairs=PAIRS)
    token = {word: tiny_model.tokenize(word, prepend_bos=False)[0] for word in ("red", "blue")}
    # Every pair but "c" has red or blue as one of its answers: +2 on red, 0 elsewhere.
    got = task.evaluate(tiny_model, [planted_logits({token["red"]: 2.0})])
    # a: red − blue = 2; b: blue − green = 0; c: green − red = −2
    assert got == {"logit_diff": pytest.approx(0.0, abs=1e-7), "accuracy": pytest.approx(1 / 3)}
    only_right = LogitDiffTask(pairs=PAIRS[:1])
    assert only_right.evaluate(tiny_model, [planted_logits({token["red"]: 2.0})]) == {
        "logit_diff": 2.0,
        "accuracy": 1.0,
    }
    assert only_right.evaluate(tiny_model, [planted_logits({token["blue"]: 2.0})]) == {
        "logit_diff": -2.0,
        "accuracy": 0.0,
    }
