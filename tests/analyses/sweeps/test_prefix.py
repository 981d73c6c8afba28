"""Prefix reuse and the clean pass's by-products: what a sweep computes once per batch."""

import torch

from analyses.interventions.means import head_means
from analyses.sweeps import work
from analyses.sweeps.ioi import PromptPair
from analyses.sweeps.prefix import clean_residuals, resume, resume_is_exact
from analyses.sweeps.tasks import LogitDiffTask, read_positions_hooks
from probes.core import hook_names

PAIRS = (  # different lengths, so batches hold padding
    PromptPair("a", "red the cat went to the park", "red", "blue"),
    PromptPair("b", "blue a dog went to the house of the man and", "blue", "green"),
    PromptPair("c", "green and the ball", "green", "red"),
)


def prepared(model, layers=frozenset({1})):
    return work.PreparedTask(model, LogitDiffTask(pairs=PAIRS), batch_size=3, layers=set(layers))


def test_resuming_from_the_clean_residual_is_exact_and_a_wrong_residual_is_not(tiny_model):
    ready = prepared(tiny_model)
    task_batch = ready.batches[0]
    batch = task_batch.batch
    assert batch.lengths.unique().numel() == 3, "the check must cover padded rows"
    assert resume_is_exact(tiny_model, batch)  # the residual from a clean pass of its own
    kept = ready.residuals[0][1]  # what the sweep's clean pass kept
    assert resume_is_exact(tiny_model, batch, 1, residual=kept)
    hooks = read_positions_hooks(task_batch.read_at, copies=1)
    assert resume_is_exact(tiny_model, batch, 1, residual=kept, fwd_hooks=hooks)
    assert ready.resume_ok()  # the sweep's own check is this one
    assert not resume_is_exact(tiny_model, batch, 1, residual=kept + 0.01)
    assert not resume_is_exact(tiny_model, batch, 1, residual=kept.roll(1, dims=0))


def test_resume_runs_the_blocks_from_the_start_layer_only(tiny_model):
    batch = prepared(tiny_model).batches[0].batch
    logits, residuals = clean_residuals(tiny_model, batch, [1])
    fired = []

    def tap(layer):
        return lambda x, hook: fired.append(layer)

    taps = [(hook_names.block(layer, "resid_pre"), tap(layer)) for layer in range(2)]
    resumed = resume(tiny_model, residuals[1], 1, batch.attention_mask, taps)
    assert fired == [1]
    torch.testing.assert_close(resumed, logits, rtol=0, atol=1e-5)


def test_the_sweeps_means_are_head_means_over_its_batches(tiny_model):
    ready = prepared(tiny_model)
    expected = head_means(tiny_model, [tb.batch for tb in ready.batches])
    assert torch.equal(ready.means, expected)
