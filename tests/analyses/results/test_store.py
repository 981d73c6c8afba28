import json
import os
import stat

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyses.results import store


def sample_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["m"] * 4,
            "probe": ["sink"] * 4,
            "metric": ["alpha", "alpha", "massive_ratio", "hidden_sink_rate"],
            "layer": [0, 1, 0, 1],
            "head": [0, 2, None, 1],
            "position": [0, 0, 0, None],
            "condition": [None, None, "sink_token", None],
            "value": [0.5, float("nan"), 123.0, 1.0],
        }
    )


def test_round_trip_keeps_values_nulls_and_types(tmp_path):
    directory = store.write_run(tmp_path, "run-1", sample_table(), {"model": {"model": "m"}})
    assert directory == tmp_path / "runs" / "run-1"
    loaded = store.load_run(tmp_path, "run-1")
    expected = store.conform(sample_table().assign(run_id="run-1"))
    pd.testing.assert_frame_equal(loaded, expected)
    assert pd.isna(loaded.loc[2, "head"])  # layer-level row: no head, not a -1 sentinel
    assert store.read_manifest(tmp_path, "run-1")["run_id"] == "run-1"


def test_parquet_metadata_carries_schema_and_manifest(tmp_path):
    store.write_run(tmp_path, "run-1", sample_table(), {"seed": 7})
    metadata = pq.read_schema(tmp_path / "runs" / "run-1" / store.RESULTS_FILE).metadata
    assert metadata[store.SCHEMA_KEY] == b"2"
    assert json.loads(metadata[store.MANIFEST_KEY])["seed"] == 7


def test_load_many_runs_and_list_them(tmp_path):
    store.write_run(tmp_path, "a", sample_table(), {"model": {"model": "m"}, "n_rows": 4})
    store.write_run(tmp_path, "b", sample_table(), {"model": {"model": "m"}, "n_rows": 4})
    both = store.load_runs(tmp_path)
    assert sorted(both.run_id.unique()) == ["a", "b"]
    assert len(both) == 8
    listing = store.list_runs(tmp_path)
    assert list(listing.run_id) == ["a", "b"]
    assert store.load_runs(tmp_path / "nothing").empty


def test_corrupt_file_is_named(tmp_path):
    directory = store.write_run(tmp_path, "run-1", sample_table(), {})
    path = directory / store.RESULTS_FILE
    path.write_bytes(path.read_bytes()[:100])  # truncated, as after a crash without atomic writes
    with pytest.raises(store.StoreError, match=r"results.parquet is not a readable parquet file"):
        store.load_run(tmp_path, "run-1")


def test_foreign_parquet_is_refused(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(
        store.StoreError, match=r"other.parquet is a parquet file but not a headlab"
    ):
        store.read_table(path)


def test_missing_run_lists_what_exists(tmp_path):
    store.write_run(tmp_path, "real", sample_table(), {})
    with pytest.raises(store.StoreError, match=r"no run 'ghost'.*newest: real"):
        store.load_run(tmp_path, "ghost")


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden", "..", "x" * 200])
def test_run_ids_cannot_reach_outside_the_runs_directory(tmp_path, run_id):
    with pytest.raises(store.StoreError, match="invalid run id"):
        store.run_dir(tmp_path, run_id)


def test_failed_write_leaves_no_run_and_no_temporary_files(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_json", explode)
    with pytest.raises(store.StoreError, match="disk full"):
        store.write_run(tmp_path, "run-1", sample_table(), {})
    assert list((tmp_path / "runs").iterdir()) == []
    assert store.run_ids(tmp_path) == []


def test_existing_run_is_never_overwritten(tmp_path):
    store.write_run(tmp_path, "run-1", sample_table(), {})
    with pytest.raises(store.StoreError, match="already exists"):
        store.write_run(tmp_path, "run-1", sample_table(), {})


def test_required_columns_are_checked():
    with pytest.raises(store.StoreError, match=r"lacks required columns \['run_id', 'value'\]"):
        store.conform(sample_table().drop(columns="value"))


def test_listing_names_every_broken_run_and_never_stops(tmp_path):
    for run_id in ("good", "truncated", "random", "bad-json", "no-manifest"):
        store.write_run(
            tmp_path, run_id, sample_table(), {"created": f"2026-01-01T00:00:0{len(run_id) % 10}"}
        )
    runs = store.runs_root(tmp_path)
    results = runs / "truncated" / store.RESULTS_FILE
    results.write_bytes(results.read_bytes()[:100])
    (runs / "random" / store.RESULTS_FILE).write_bytes(bytes(range(256)) * 8)
    (runs / "bad-json" / store.MANIFEST_FILE).write_text("{not json")
    (runs / "no-manifest" / store.MANIFEST_FILE).unlink()
    listing = store.list_runs(tmp_path).set_index("run_id")["status"]
    assert listing["good"] == "ok"
    assert listing["truncated"].startswith("unreadable: results.parquet is not a readable")
    assert listing["random"].startswith("unreadable: results.parquet is not a readable")
    assert "not valid JSON" in listing["bad-json"]
    assert "has no manifest" in listing["no-manifest"]
    with pytest.raises(store.StoreError, match="has no manifest"):
        store.load_run(tmp_path, "no-manifest")


def test_latest_is_the_newest_readable_run_by_creation_time(tmp_path):
    store.write_run(tmp_path, "b-first", sample_table(), {"created": "2026-01-01T00:00:00+00:00"})
    store.write_run(tmp_path, "a-second", sample_table(), {"created": "2026-01-02T00:00:00+00:00"})
    assert store.latest_run(tmp_path) == "a-second"  # not the alphabetically last
    store.write_run(tmp_path, "c-broken", sample_table(), {"created": "2026-01-03T00:00:00+00:00"})
    (store.runs_root(tmp_path) / "c-broken" / store.RESULTS_FILE).write_bytes(b"junk")
    assert store.latest_run(tmp_path) == "a-second"
    assert store.latest_run(tmp_path, where=lambda m: m["created"].startswith("2026-01-01")) == (
        "b-first"
    )


def test_a_run_is_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        path = store.write_run(tmp_path, "shared", sample_table(), {"model": {}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert {stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == {0o644}
