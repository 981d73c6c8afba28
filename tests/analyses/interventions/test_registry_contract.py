"""One contract over every registered intervention kind: what sweeps and jobs rely on.

Each kind, on the tiny random model: its hooks are attached only inside the `with` block, the
output repeats under a seed and has no NaN, its edits never change their input in place, every
attention pattern it edits keeps rows summing to 1, its neutral setting gives the clean logits
exactly (and a real setting does not), applied in a `with` block it gives what its hooks give
(a neutral setting warns that it changed nothing), and a test of its own elsewhere in this folder.
"""

import ast
import importlib
import warnings
from pathlib import Path

import pytest
import torch

from analyses.interventions.applied import NoEffectWarning
from analyses.interventions.kinds import (
    AttentionRedistribution,
    HeadAblation,
    HeadScale,
    Intervention,
    SoftPAG,
    hooks,
)
from analyses.interventions.registry import INTERVENTIONS, register_intervention
from analyses.interventions.vhr import VisionHeadReinforcement  # kinds in modules of their own
from probes import bridge
from probes.core import hook_names
from probes.models import ModelInfo

TEXT = "mary gave the ball to john and the dog went to the store with the man"
HEADS = ((0, 1), (1, 0), (1, 2))
TESTS = Path(__file__).resolve().parent


def _means(info: ModelInfo) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(info.n_layers, info.n_heads, info.d_head, generator=generator)


# Per kind: settings that must leave the model exactly as it is, and settings that must not.
NEUTRAL = {
    "head_ablation": lambda info: [
        HeadAblation((), "zero"),
        HeadAblation((), "uniform"),
        HeadAblation((), "mean", means=_means(info)),
    ],
    "head_scale": lambda info: [HeadScale(HEADS, 1.0)],
    "vhr": lambda info: [VisionHeadReinforcement(HEADS, 1.0)],
    "soft_pag": lambda info: [SoftPAG(HEADS, 0.0)],
    "attention_redistribution": lambda info: [
        AttentionRedistribution(HEADS, keep=1.0),  # ACT's detected sinks keep everything
        AttentionRedistribution(HEADS, keep=1.0, sources=(0,), targets=(3, 8)),
    ],
}
REAL = {
    "head_ablation": lambda info: [
        HeadAblation(HEADS, "zero"),
        HeadAblation(HEADS, "uniform"),
        HeadAblation(HEADS, "mean", means=_means(info)),
    ],
    "head_scale": lambda info: [HeadScale(HEADS, 2.0)],
    "vhr": lambda info: [VisionHeadReinforcement(HEADS, 2.0)],
    "soft_pag": lambda info: [SoftPAG(HEADS, 0.5)],
    "attention_redistribution": lambda info: [
        AttentionRedistribution.act(HEADS, beta=0.4, threshold=0.05),
        AttentionRedistribution(HEADS, keep=0.6, sources=(0,), targets=(3, 8)),
    ],
}
KINDS = sorted(INTERVENTIONS)


def run(model, fwd_hooks, capture=()):
    """Logits of TEXT with `fwd_hooks`, and the activations at `capture` after them."""
    tokens = torch.tensor([model.tokenize(TEXT)])
    captured = {}

    def keep(name):
        def hook(x, hook):
            captured[name] = x.detach().clone()

        return hook

    taps = [(name, keep(name)) for name in capture]
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[*fwd_hooks, *taps]):
        logits = model.bridge(tokens)
    return logits, captured


def test_the_registry_holds_every_builtin_kind():
    assert KINDS == ["attention_redistribution", "head_ablation", "head_scale", "soft_pag", "vhr"]
    assert sorted(NEUTRAL) == sorted(REAL) == KINDS, "give each new kind its contract settings"
    for name, cls in INTERVENTIONS.items():
        assert cls.name == name and issubclass(cls, Intervention)
        assert getattr(importlib.import_module(cls.__module__), cls.__name__) is cls


def test_the_registry_refuses_a_duplicate_name():
    class Impostor(HeadScale):
        name = "head_scale"

    with pytest.raises(ValueError, match="'head_scale' is already registered"):
        register_intervention(Impostor)
    assert INTERVENTIONS["head_scale"] is HeadScale


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_are_attached_only_inside_the_with_block(tiny_model, kind):
    info = tiny_model.info
    for intervention in REAL[kind](info):
        fwd_hooks = hooks([intervention], info)
        names = {name for name, _ in intervention.edits(info)}
        assert bridge.hooked_points(tiny_model) == []
        with tiny_model.bridge.hooks(fwd_hooks=fwd_hooks):
            # hook_z is also listed under its alias (attn.o.hook_in): the same hook point
            assert names <= set(bridge.hooked_points(tiny_model)), intervention.label
        assert bridge.hooked_points(tiny_model) == [], intervention.label
    clean, _ = run(tiny_model, [])
    after, _ = run(tiny_model, [])
    assert torch.equal(after, clean)


@pytest.mark.parametrize("kind", KINDS)
def test_output_repeats_under_a_seed_and_has_no_nan(tiny_model, kind):
    info = tiny_model.info
    for intervention in [*NEUTRAL[kind](info), *REAL[kind](info)]:
        outputs = []
        for _ in range(2):
            torch.manual_seed(0)
            outputs.append(run(tiny_model, hooks([intervention], info))[0])
        assert torch.equal(outputs[0], outputs[1]), intervention.label
        assert not outputs[0].isnan().any(), intervention.label


@pytest.mark.parametrize("kind", KINDS)
def test_edits_never_change_their_input(tiny_model, kind):
    info = tiny_model.info
    for intervention in REAL[kind](info):
        edits = intervention.edits(info)
        _, clean = run(tiny_model, [], capture=sorted({name for name, _ in edits}))
        for name, edit in edits:
            activation = clean[name].clone()
            edited = edit(activation, None)
            assert torch.equal(activation, clean[name]), f"{intervention.label} at {name}"
            assert edited.shape == activation.shape
            assert not torch.equal(edited, activation), f"{intervention.label} edits nothing"


@pytest.mark.parametrize("kind", KINDS)
def test_edited_patterns_keep_rows_summing_to_one(tiny_model, kind):
    info = tiny_model.info
    patterns = [hook_names.attn(layer, "pattern") for layer in range(info.n_layers)]
    _, clean = run(tiny_model, [], capture=patterns)
    for intervention in REAL[kind](info):
        _, got = run(tiny_model, hooks([intervention], info), capture=patterns)
        for name in patterns:
            sums = got[name].sum(-1)
            torch.testing.assert_close(sums, torch.ones_like(sums), msg=intervention.label)
        edited = {name for name, _ in intervention.edits(info)} & set(patterns)
        for name in edited:  # the check is not vacuous: these patterns did change
            assert not torch.allclose(got[name], clean[name]), f"{intervention.label} at {name}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_neutral_setting_is_the_identity_and_a_real_one_is_not(tiny_model, kind):
    info = tiny_model.info
    clean, _ = run(tiny_model, [])
    for intervention in NEUTRAL[kind](info):
        got, _ = run(tiny_model, hooks([intervention], info))
        assert torch.equal(got, clean), intervention.label
    for intervention in REAL[kind](info):
        got, _ = run(tiny_model, hooks([intervention], info))
        assert not torch.allclose(got, clean, atol=1e-4), intervention.label


@pytest.mark.parametrize("kind", KINDS)
def test_applied_in_a_with_block_equals_its_hooks_and_a_neutral_setting_warns(tiny_model, kind):
    info = tiny_model.info
    for intervention in REAL[kind](info):
        expected, _ = run(tiny_model, hooks([intervention], info))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a real setting changes something: no warning
            with intervention.applied(tiny_model):
                got, _ = run(tiny_model, [])
        assert torch.equal(got, expected), intervention.label
        assert bridge.hooked_points(tiny_model) == [], intervention.label
    for intervention in NEUTRAL[kind](info):
        with (
            pytest.warns(NoEffectWarning, match="changed nothing"),
            intervention.applied(tiny_model),
        ):
            run(tiny_model, [])


def _tests_naming(name: str) -> list[str]:
    """Test functions in this folder, outside this file, whose code names `name`."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if name in names:
                    found.append(f"{path.name}::{node.name}")
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_a_test_of_its_own(kind):
    cls = INTERVENTIONS[kind]
    assert _tests_naming(cls.__name__), (
        f"intervention {kind!r} ({cls.__name__}) has no test in {TESTS} that names it"
    )
