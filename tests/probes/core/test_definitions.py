"""Every metric the schema declares has a definition, and nothing else has one."""

from __future__ import annotations

from probes.core import definitions, schema


def test_every_declared_metric_has_exactly_one_definition():
    declared = {
        (probe, metric) for probe, metrics in schema.PROBE_METRICS.items() for metric in metrics
    }
    assert set(definitions.DEFINITIONS) == declared


def test_definitions_are_sentences_with_a_short_label():
    for (probe, metric), definition in definitions.DEFINITIONS.items():
        assert 0 < len(definition.name) <= 24, (probe, metric)
        assert len(definition.meaning) > 20, (probe, metric)


def test_a_sweep_harm_states_its_sign():
    harm = definitions.define(
        schema.SWEEP_PROBE, schema.sweep_metric("ioi", "logit_diff", harm=True)
    )
    assert harm.name == "harm of ioi.logit_diff"
    assert "positive = the edit hurt" in harm.meaning
    measure = definitions.define(schema.SWEEP_PROBE, "ioi.logit_diff")
    assert "harm" not in measure.meaning


def test_an_attribution_estimate_says_it_is_an_estimate():
    assert "attribution-patching estimate" in definitions.hover(
        schema.ATTRIBUTION_PROBE, "ioi.loss"
    )


def test_an_unknown_metric_says_so_instead_of_inventing_a_meaning():
    assert "no definition recorded" in definitions.hover("mystery", "x")
    assert definitions.label("sink", "alpha").startswith("α")
