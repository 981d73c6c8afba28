"""Every job's config round-trips through its manifest: a run can be re-created from it."""

import json
from pathlib import Path

import pytest

from analyses.jobs.retrieval_masking import MaskingConfig
from analyses.jobs.scan import ScanConfig
from analyses.results import manifest as manifests
from analyses.results import store
from analyses.sweeps.plan_file import plan_from_dict
from analyses.sweeps.runner import SweepConfig


def through_json(config):
    record = manifests.build("test", config, model={"model": "x"})
    return json.loads(json.dumps(record))  # what a manifest file holds


@pytest.mark.parametrize(
    "config",
    [
        ScanConfig(),
        ScanConfig(
            model="gemma-3-270m",
            probes=("sink", "retrieval"),
            prompts=Path("/tmp/p.jsonl"),
            max_tokens=None,
            data_dir=Path("elsewhere"),
            run_id="r1",
            probe_params={"sink": {"epsilon": 0.2}, "retrieval": {"lengths": (512, 1024)}},
        ),
    ],
)
def test_scan_config_round_trips(config):
    again = ScanConfig.from_manifest(through_json(config))
    assert again == config
    assert manifests.config_record(again) == manifests.config_record(config)


def test_masking_config_round_trips():
    config = MaskingConfig("run-1", ks=(1, 2), lengths=(256,), needles_per_cell=None)
    assert MaskingConfig.from_manifest(through_json(config)) == config


def test_sweep_config_with_a_nested_plan_round_trips():
    raw = {
        "model": "tiny-random",
        "tasks": {"lm": {"n_prompts": 2}},
        "single_head": {"modes": ["zero", "mean"], "layers": [0]},
        "top_k": [{"metric": "alpha", "probe": "sink", "position": 0, "k": [1, 2]}],
        "strength": [{"kind": "scale", "values": [0.5, 2.0], "heads": [[0, 1], [1, 2]]}],
    }
    config = SweepConfig(plan_from_dict(raw, "test"), data_dir=Path("d"), run_id="r")
    record = json.loads(json.dumps({"sweeps": {"s": {"config": manifests.config_record(config)}}}))
    assert SweepConfig.from_manifest(record, "s") == config


def test_a_record_that_does_not_fit_the_config_is_a_clear_error():
    with pytest.raises(manifests.ManifestError, match=r"ScanConfig has no field\(s\) \['modle'\]"):
        manifests.config_from_record(ScanConfig, {"modle": "x"})
    with pytest.raises(manifests.ManifestError, match=r"ScanConfig.probes: expected a list"):
        manifests.config_from_record(ScanConfig, {"probes": "sink"})


def test_a_stored_scan_manifest_recreates_its_config(tiny_model, tmp_path, monkeypatch):
    from analyses.jobs import scan_runs

    monkeypatch.setattr(
        "probes.models.load", lambda name, device="cpu", dtype="float32": tiny_model
    )
    config = ScanConfig(
        model="tiny-random", probes=("sink",), max_tokens=16, data_dir=tmp_path, progress=False
    )
    directory = scan_runs.run_one(config)
    manifest = store.read_manifest(tmp_path, directory.name)
    assert ScanConfig.from_manifest(manifest) == config
