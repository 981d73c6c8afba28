"""Run ids: short and readable, valid for any model name, ordered by time within a model and
probe set, and never shared by two writers (analyses/results/run_ids.py, locks.claim_new)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analyses.jobs.scan import DEFAULT_PROBES
from analyses.results import locks, run_ids, store
from probes.families import registered_probes

NOON = datetime(2026, 12, 2, 12, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "probes", "expected"),
    [
        ("smollm2-135m", DEFAULT_PROBES, "smollm2-135m-default-20261202-120005"),
        ("smollm2-135m", tuple(reversed(DEFAULT_PROBES)), "smollm2-135m-default-20261202-120005"),
        ("smollm2-135m", ("retrieval",), "smollm2-135m-retrieval-20261202-120005"),
        ("gemma-3-270m", ("sink", "pattern_class"),
         "gemma-3-270m-sink.pattern_class-20261202-120005"),
        ("smollm2-135m", ("sink", "attention_stats", "future_attention"),
         "smollm2-135m-sink.2more-20261202-120005"),
        ("HuggingFaceTB/SmolLM2-360M", ("sink",), "SmolLM2-360M-sink-20261202-120005"),
        ("/models/my org/Llama 3 (local)/", ("sink",), "Llama_3_local-sink-20261202-120005"),
        ("tiny-random-3", ("divergence",), "tiny-random-3-divergence-20261202-120005"),
    ],
)  # fmt: skip
def test_scan_ids_read_as_model_probes_time(model, probes, expected):
    run_id = run_ids.scan_run_id(model, probes, DEFAULT_PROBES, now=NOON)
    assert run_id == expected
    assert store.validate_run_id(run_id) == run_id


def test_ids_of_registry_models_stay_short():
    """The old ids were ~90 characters (time-model-every_probe_name); the default scan, a sink
    or a retrieval scan now take ≤ 40, any one probe ≤ 45 (future_attention is 16 letters)."""
    for model in ("smollm2-135m", "gemma-3-270m"):
        for probes in [DEFAULT_PROBES, ("sink",), ("retrieval",), ("divergence",)]:
            assert len(run_ids.scan_run_id(model, probes, DEFAULT_PROBES, now=NOON)) <= 40
        for name in registered_probes():
            assert len(run_ids.scan_run_id(model, (name,), DEFAULT_PROBES, now=NOON)) <= 45
        assert len(run_ids.sweep_run_id(model, "ab" * 32)) <= 30
    longest = run_ids.scan_run_id("x" * 200, ("y" * 200, "z"), DEFAULT_PROBES, now=NOON)
    assert len(longest) == run_ids.MODEL_CHARS + 1 + run_ids.PROBES_CHARS + 1 + 15
    assert longest.endswith(".1more-20261202-120005")
    assert store.validate_run_id(run_ids.scan_run_id("///", ("sink",), ()))  # no name left


def test_ids_of_one_model_and_probe_set_sort_by_time():
    times = [datetime(2026, month, day, hour, tzinfo=UTC)
             for month, day, hour in [(1, 2, 9), (1, 2, 10), (3, 1, 0), (11, 30, 23)]]  # fmt: skip
    ids = [run_ids.scan_run_id("smollm2-135m", ("sink",), DEFAULT_PROBES, now=t) for t in times]
    assert sorted(ids) == ids and len(set(ids)) == len(ids)


def test_a_sweep_id_is_the_plans_so_a_rerun_finds_it():
    sha = "0123456789abcdef" * 4
    assert run_ids.sweep_run_id("smollm2-135m", sha) == "smollm2-135m-sweep-01234567"
    assert run_ids.sweep_run_id("org/m", sha) == run_ids.sweep_run_id("org/m", sha)
    assert run_ids.sweep_run_id("org/m", sha) != run_ids.sweep_run_id("org/m", "f" + sha[1:])
    assert run_ids.legacy_sweep_run_id("org/m", sha) == "sweep-org_m-0123456789"


def test_claim_new_skips_existing_runs_and_names_held_by_another_writer(tmp_path):
    runs = tmp_path / "runs"
    (runs / "m-sink-t").mkdir(parents=True)  # a finished run of that name
    with locks.claim_new(runs, "m-sink-t") as first:
        assert first == "m-sink-t-2"
        # a second scan that picked the same name in the same second, while the first runs
        with locks.claim_new(runs, "m-sink-t") as second:
            assert second == "m-sink-t-3"
        refused = pytest.raises(locks.RunLockedError, match="being written by another process")
        with refused, locks.writing(runs, first):  # the claimed id is held
            pass
    with locks.claim_new(runs, "m-sink-t") as again:  # released, and still not created
        assert again == "m-sink-t-2"


def test_claim_new_gives_up_with_a_clear_error_rather_than_looping(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(locks, "CLAIM_ATTEMPTS", 3)
    for name in ("r", "r-2", "r-3"):
        (runs / name).mkdir(parents=True)
    with (
        pytest.raises(locks.RunLockedError, match=r"runs 'r' to r-3 all exist"),
        locks.claim_new(runs, "r"),
    ):
        pass
