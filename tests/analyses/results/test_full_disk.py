"""A full disk while writing a run or a sweep part: a StoreError naming the file, and nothing
half-written left behind (a patched writer stands in for the disk, so the test needs no mount)."""

import errno

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analyses.results import store
from analyses.sweeps.parts import write_part

ROWS = pd.DataFrame([{"probe": "sink", "metric": "alpha", "layer": 0, "value": 1.0}])


@pytest.fixture
def full_disk(monkeypatch):
    def no_space(table, where, *args, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half")  # the disk fills up halfway through
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", no_space)


def test_a_run_written_to_a_full_disk_is_an_error_and_leaves_nothing(tmp_path, full_disk):
    with pytest.raises(store.StoreError, match=r"results\.parquet.*No space left on device") as e:
        store.write_run(tmp_path, "r", ROWS.assign(model="m"), {"model": {}})
    final = store.run_dir(tmp_path, "r")
    assert f"{final}/results.parquet" in str(e.value)  # the run's path, not the staging one
    assert str(e.value).endswith("run 'r' was not created")
    assert sorted(p.name for p in store.runs_root(tmp_path).iterdir()) == []


def test_a_sweep_part_written_to_a_full_disk_is_an_error_and_leaves_nothing(tmp_path, full_disk):
    with pytest.raises(store.StoreError, match=r"part-.*No space left on device"):
        write_part(tmp_path, [{"probe": "sweep", "metric": "lm.loss", "value": 1.0}], ["u1"])
    assert list(tmp_path.iterdir()) == []
