"""Probe parameters validate themselves when built: types from the annotations, ranges from each
family's `check`, errors naming the parameter."""

import pytest

from probes import engine
from probes.core.errors import ConfigError
from probes.families import registered_probes
from probes.families.retrieval import RetrievalParams
from probes.families.sink import SinkParams, SinkProbe
from probes.inputs.prompts import Prompt, PromptSuite


@pytest.mark.parametrize("name", sorted(registered_probes()))
def test_every_family_builds_its_defaults(name):
    params = registered_probes()[name].Params()
    assert type(params)(**params.as_dict()) == params


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (lambda: SinkParams(epsilon=-1.0), r"SinkParams.epsilon must be in \[0, 1\), got -1.0"),
        (lambda: SinkParams(epsilon="x"), "SinkParams.epsilon must be a number, got 'x'"),
        (lambda: SinkParams(n_positions=0), "SinkParams.n_positions must be at least 1"),
        (lambda: SinkParams(n_positions=2.5), "n_positions must be a whole number"),
        (lambda: SinkParams(epsilon=float("nan")), "epsilon must be a number, got NaN"),
        (lambda: RetrievalParams(depths=(0, 120)), r"RetrievalParams.depths must be in \[0, 100\]"),
        (lambda: RetrievalParams(lengths=()), "RetrievalParams.lengths must be"),
        (lambda: RetrievalParams(lengths=512), "lengths must be a list of values"),
    ],
)
def test_bad_values_are_config_errors_naming_the_parameter(params, match):
    with pytest.raises(ConfigError, match=match):
        params()


def test_lists_become_tuples_and_whole_numbers_become_floats_where_numbers_are_asked():
    params = RetrievalParams(lengths=[64, 128], recall_threshold=0)
    assert params.lengths == (64, 128) and isinstance(params.recall_threshold, float)


def test_a_probe_is_used_for_one_run_only(tiny_model):
    suite = PromptSuite("t", (Prompt("p0", "the cat went to the park"),), "test")
    probe = SinkProbe(tiny_model.info)
    engine.run(tiny_model, [probe], suite, progress=False)
    with pytest.raises(ConfigError, match="already used for a run"):
        engine.run(tiny_model, [probe], suite, progress=False)


def test_an_empty_suite_is_an_error_not_zeros(tiny_model):
    with pytest.raises(ConfigError, match="holds no prompts"):
        engine.run(tiny_model, [SinkProbe(tiny_model.info)], PromptSuite("e", (), "x"))
