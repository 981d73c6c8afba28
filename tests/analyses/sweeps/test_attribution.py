import pandas as pd
import pytest
import torch

from analyses.interventions.kinds import HeadAblation, HeadScale, hooks
from analyses.sweeps.attribution import (
    attribution_scores,
    head_gradients,
    spearman,
    uniform_outputs,
)
from analyses.sweeps.tasks import LogitDiffTask, make_task
from probes.core import hook_names as hook_names
from tests import planting


@pytest.fixture(scope="module")
def lm_task():
    return make_task("lm", {"n_prompts": 2, "max_tokens": 24})


def test_gradient_matches_a_finite_difference_of_the_objective(tiny_model, lm_task):
    """For head scaling by 1 + ε the first-order estimate ε·Σ ∂M/∂z·z is the exact change as
    ε → 0; a wrong gradient (wrong layer, head, sign or normalisation) breaks this."""
    task_batches = lm_task.prepare(tiny_model, batch_size=2)
    total = sum(lm_task.weight(tb) for tb in task_batches)
    clean = lm_task.evaluate(tiny_model, [])["loss"]
    epsilon = 1e-3
    estimates = torch.zeros(2, 4, dtype=torch.float64)
    for task_batch in task_batches:
        zs, grads, _ = head_gradients(tiny_model, lm_task, task_batch, total)
        for layer in zs:
            estimates[layer] += epsilon * (grads[layer] * zs[layer]).sum(dim=(0, 1, 3)).double()
    for layer, head in [(0, 0), (0, 3), (1, 1), (1, 2)]:
        scaled = HeadScale(((layer, head),), 1 + epsilon)
        exact = lm_task.evaluate(tiny_model, hooks([scaled], tiny_model.info))["loss"] - clean
        assert abs(exact) > 1e-7
        assert estimates[layer, head].item() == pytest.approx(exact, rel=0.05, abs=2e-7)


def test_uniform_outputs_are_what_the_uniform_mask_produces(tiny_model):
    tokens = torch.tensor([tiny_model.tokenize("mary gave the ball to john and the dog went")])
    names = [hook_names.attn(1, "v"), hook_names.attn(1, "z")]
    seen = {}

    def keep(name):
        def hook(x, hook):
            seen[name] = x.detach().clone()

        return hook

    ablation = hooks([HeadAblation(((1, 1),), "uniform")], tiny_model.info)
    with (
        torch.inference_mode(),
        tiny_model.bridge.hooks(fwd_hooks=[*ablation, *[(n, keep(n)) for n in names]]),
    ):
        tiny_model.bridge(tokens)
    expected = uniform_outputs(seen[names[0]], tiny_model.info.n_heads)
    torch.testing.assert_close(seen[names[1]][:, :, 1], expected[:, :, 1])
    assert not torch.allclose(seen[names[1]][:, :, 0], expected[:, :, 0])  # head 0 untouched


def test_attribution_finds_the_planted_task_head():
    model, pairs = planting.copy_task_model(task_head=(0, 1))
    task = LogitDiffTask(pairs=tuple(planting_pairs(pairs)))
    batches = task.prepare(model, batch_size=8)
    means = torch.zeros(model.info.n_layers, model.info.n_heads, model.info.d_head)
    scores = attribution_scores(model, task, batches, ["zero", "mean", "uniform"], means)
    for mode, change in scores.items():
        harm = -change  # logit difference: higher is better
        assert harm.argmax().item() == 0 * model.info.n_heads + 1, mode
        others = torch.cat([harm.flatten()[:1], harm.flatten()[2:]])
        assert others.abs().max() < 0.2 * harm[0, 1], mode


def planting_pairs(pairs):
    from analyses.sweeps.ioi import PromptPair

    return [PromptPair(pid, text, good, bad) for pid, text, good, bad in pairs]


def test_mean_mode_needs_means(tiny_model, lm_task):
    with pytest.raises(ValueError, match="needs `means`"):
        attribution_scores(tiny_model, lm_task, lm_task.prepare(tiny_model, 2), ["mean"])


def test_spearman_on_known_orders():
    a = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    assert spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, pd.Series([1.0, 2.0, 4.0, 3.0], index=list("abcd"))) == pytest.approx(0.8)
    # aligned on the index, not on order
    assert spearman(a, pd.Series([4.0, 3.0, 2.0, 1.0], index=list("dcba"))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two paired"):
        spearman(a.iloc[:1], a.iloc[:1])
