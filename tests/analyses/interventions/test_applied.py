"""Interventions as context managers: `intervention.applied(model)` and `applied(model, [...])`."""

import warnings

import pytest
import torch

from analyses.interventions.applied import NoEffectWarning, applied
from analyses.interventions.kinds import (
    AttentionRedistribution,
    HeadAblation,
    HeadScale,
    SoftPAG,
    hooks,
)
from probes import bridge, engine
from probes.core.errors import ConfigError, HeadlabError
from probes.families.sink import SinkProbe
from probes.inputs.prompts import text_suite
from tests import planting

TEXT = "mary gave the ball to john and the dog went to the store with the man"


def logits(model, interventions=()):
    """Logits of TEXT, with `interventions` handed to the forward pass (empty: as it stands)."""
    tokens = torch.tensor([model.tokenize(TEXT)])
    return bridge.forward(model, tokens, hooks(list(interventions), model.info))


def test_inside_the_block_every_pass_is_edited_and_after_it_none_is(tiny_model):
    ablation = HeadAblation([(0, 1), (1, 2)])
    clean = logits(tiny_model)
    expected = logits(tiny_model, [ablation])
    assert not torch.allclose(expected, clean)
    with ablation.applied(tiny_model) as block:
        assert torch.equal(logits(tiny_model), expected)
        assert torch.equal(logits(tiny_model), expected)  # every pass, not only the first
    assert block.changed and block.calls == 2 * 2  # two layers' hook_z, two passes
    assert bridge.hooked_points(tiny_model) == []
    assert torch.equal(logits(tiny_model), clean)


def test_blocks_nest_and_compose_in_order(tiny_model):
    outer, inner = HeadScale("L0H1", 3.0), HeadScale("L0H1", 0.5)
    composed = logits(tiny_model, [outer, inner])
    with outer.applied(tiny_model), inner.applied(tiny_model):
        nested = logits(tiny_model)
    with applied(tiny_model, [outer, inner]):
        listed = logits(tiny_model)
    assert torch.equal(nested, composed) and torch.equal(listed, composed)
    with outer.applied(tiny_model):
        with pytest.warns(NoEffectWarning), inner.applied(tiny_model):
            pass
        assert not torch.equal(logits(tiny_model), composed)  # the outer one is still on


def test_a_scan_inside_the_block_sees_the_edit(tiny_model):
    """SoftPAG u = 1 gives L1H0 identity attention; the sink probe (bridge path, its hooks after
    the intervention's) then measures α at key 0 = 1/T exactly."""
    suite = text_suite([TEXT])
    n_tokens = len(tiny_model.tokenize(TEXT))
    with SoftPAG("L1H0", 1.0).applied(tiny_model):
        assert engine.choose_path(tiny_model, [SinkProbe(tiny_model.info)], "auto") == "bridge"
        table = engine.run(tiny_model, [SinkProbe(tiny_model.info)], suite, progress=False)
    alpha = table[(table.metric == "alpha") & (table.position == 0)].set_index(["layer", "head"])
    assert alpha.loc[(1, 0), "value"] == pytest.approx(1 / n_tokens, abs=1e-6)
    assert alpha.loc[(1, 1), "value"] != pytest.approx(1 / n_tokens, abs=1e-3)


def test_heads_the_model_lacks_fail_before_the_block(tiny_model):
    with pytest.raises(ConfigError, match="head L9H0 does not exist in model 'tiny-random'"):
        HeadAblation("L9H0").applied(tiny_model)


def test_an_error_in_the_block_detaches_the_hooks_and_is_not_hidden(tiny_model):
    with pytest.raises(KeyError), HeadAblation("L0H0").applied(tiny_model):
        raise KeyError("boom")
    assert bridge.hooked_points(tiny_model) == []


def test_a_block_is_not_entered_twice_at_once(tiny_model):
    block = HeadAblation("L0H0").applied(tiny_model)
    with block:
        with pytest.raises(HeadlabError, match="already applied"), block:
            pass
        logits(tiny_model)
    assert bridge.hooked_points(tiny_model) == []
    with block:  # after it ends it may be used again
        logits(tiny_model)


def test_act_on_a_head_that_sinks_only_on_bos_warns_why_and_sources_0_moves_it(tiny_model):
    """ACT spares each head's first sink (the authors' `indices[1:]`): on a planted head whose
    only sink is BOS it is exactly the identity, and says so; sources=(0,) moves the attention."""
    with bridge.attached(tiny_model, [planting.bos_heavy_head(1, 0)]):
        planted = logits(tiny_model)
        with (
            pytest.warns(NoEffectWarning, match="ACT spares the first sink.*give sources=\\(0,\\)"),
            AttentionRedistribution.act("L1H0").applied(tiny_model),
        ):
            assert torch.equal(logits(tiny_model), planted)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with AttentionRedistribution("L1H0", keep=0.4, sources=(0,)).applied(tiny_model):
                assert not torch.allclose(logits(tiny_model), planted)


@pytest.mark.parametrize(
    ("intervention", "why"),
    [
        (HeadScale("L0H1", 1.0), "alpha = 1 is the identity"),
        (SoftPAG("L0H1", 0.0), "u = 0 is the identity"),
        (HeadAblation([]), "no heads given"),
    ],
)
def test_a_block_that_changed_nothing_warns(tiny_model, intervention, why):
    with pytest.warns(NoEffectWarning, match=why), intervention.applied(tiny_model):
        logits(tiny_model)


def test_a_block_without_a_forward_pass_warns(tiny_model):
    with (
        pytest.warns(NoEffectWarning, match="no forward pass through the bridge"),
        HeadAblation("L0H0").applied(tiny_model),
    ):
        pass
