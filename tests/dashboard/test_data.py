"""The dashboard reads only headlab runs under its data directory, and never imports torch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyses.cli import main as cli
from analyses.results import store
from analyses.results.store import StoreError
from dashboard import data
from tests.dashboard.fixture_runs import write_fixture_runs

REPO = Path(__file__).resolve().parents[2]


def small_run(data_dir: Path, run_id: str, value: float = 1.0) -> Path:
    table = pd.DataFrame(
        [{"probe": "sink", "metric": "alpha", "layer": 0, "head": 0, "position": 0,
          "value": value}]
    )  # fmt: skip
    return store.write_run(data_dir, run_id, table.assign(model="m"), {"model": {"model": "m"}})


@pytest.mark.parametrize("run_id", ["..", "../outside", "a/b", "/etc", "", ".hidden", "x" * 200])
def test_crafted_run_ids_are_refused(tmp_path, run_id):
    small_run(tmp_path, "ok")
    with pytest.raises(StoreError, match="invalid run id"):
        data.run_directory(tmp_path, run_id)


def test_a_symlinked_run_leading_outside_is_neither_listed_nor_read(tmp_path):
    inside, outside = tmp_path / "data", tmp_path / "elsewhere"
    small_run(inside, "ok")
    small_run(outside, "secret")
    (inside / "runs" / "link").symlink_to(outside / "runs" / "secret")
    assert store.run_ids(inside) == ["ok"]  # the CLI's listing applies the same rule
    assert data.run_ids(inside) == ["ok"]
    with pytest.raises(StoreError, match="outside"):
        store.load_run(inside, "link")
    with pytest.raises(StoreError, match="outside"):
        data.load_results(inside, "link")
    assert list(data.list_runs(inside)["run_id"]) == ["ok"]


def test_a_symlinked_results_file_leading_outside_is_refused(tmp_path):
    run = small_run(tmp_path / "data", "ok")
    secret = small_run(tmp_path / "elsewhere", "secret") / store.RESULTS_FILE
    (run / "other.parquet").symlink_to(secret)
    with pytest.raises(StoreError, match="outside"):
        data.load_results(tmp_path / "data", "ok")


def test_corrupt_and_foreign_parquet_files_are_errors_naming_the_file(tmp_path):
    run = small_run(tmp_path, "ok")
    (run / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(StoreError, match=r"broken\.parquet"):
        data.load_results(tmp_path, "ok")
    (run / "broken.parquet").unlink()
    pq.write_table(pa.table({"x": [1]}), run / "foreign.parquet")
    with pytest.raises(StoreError, match=r"foreign\.parquet.*not a headlab results table"):
        data.load_results(tmp_path, "ok")


def test_a_bad_manifest_is_an_error_naming_it(tmp_path):
    run = small_run(tmp_path, "ok")
    (run / store.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(StoreError, match=r"manifest\.json"):
        data.read_manifest(tmp_path, "ok")
    assert data.list_runs(tmp_path).empty  # the overview skips it instead of failing


def test_loads_skip_pattern_rows_and_read_one_head_of_them(fixture_data):
    results = data.load_results(fixture_data, "toy-a")
    assert "pattern" not in set(results["probe"])
    full = store.load_run(fixture_data, "toy-a")
    assert len(results) == (full["probe"] != "pattern").sum()
    cells = data.load_head_pattern(fixture_data, "toy-a", 2, 3, "p1")
    assert len(cells) == 5 * 6 // 2  # five blocks, lower triangle
    assert set(cells.columns) == {"query_block", "key_block", "value"}


def test_cached_loads_see_a_rewritten_run(tmp_path):
    small_run(tmp_path, "r", value=1.0)
    assert data.results(tmp_path, "r")["value"].tolist() == [1.0]
    store.write_table(
        tmp_path / "runs" / "r" / store.RESULTS_FILE,
        store.load_run(tmp_path, "r").assign(value=2.0),
    )
    os.utime(tmp_path / "runs" / "r" / store.RESULTS_FILE, ns=(1, 1))  # a different mtime
    assert data.results(tmp_path, "r")["value"].tolist() == [2.0]


def test_data_dir_comes_from_the_arguments_after_the_double_dash(tmp_path):
    assert data.data_dir_from_args(["--data", str(tmp_path)]) == tmp_path.resolve()
    assert data.data_dir_from_args([]) == Path("data").resolve()


def test_headlab_dashboard_runs_streamlit_on_localhost_with_the_data_dir(tmp_path):
    command = cli.dashboard_command(tmp_path / "d", 8765)
    app = Path(command[command.index("run") + 1])
    assert app == REPO / "dashboard" / "app.py" and app.is_file()
    settings = dict(zip(command[5:-3:2], command[6:-3:2], strict=True))
    assert settings["--server.address"] == "127.0.0.1"
    assert settings["--server.port"] == "8765"
    assert settings["--server.headless"] == "true"
    assert command[-3:] == ["--", "--data", str((tmp_path / "d").resolve())]
    assert cli.build_parser().parse_args(["dashboard", "--port", "9"]).port == 9


def test_the_dashboard_never_imports_torch(tmp_path):
    """Every page rendered in a fresh interpreter leaves torch unimported."""
    write_fixture_runs(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from streamlit.testing.v1 import AppTest
        pages = {sorted(p.name for p in (REPO / "dashboard" / "views").glob("*.py"))!r}
        for page in pages:
            app = AppTest.from_file({str(REPO / "dashboard" / "app.py")!r}, default_timeout=60)
            app.session_state["data_dir"] = {str(tmp_path)!r}
            app.run()
            app.switch_page("views/" + page).run()
            assert not app.exception, (page, app.exception)
        print("torch" in sys.modules, "dashboard.data" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "True"]


def test_fixture_runs_are_valid_runs(fixture_data):
    for run_id in ("toy-a", "toy-b", "duo", "vis"):
        table = store.load_run(fixture_data, run_id)
        assert table["value"].notna().all()
        assert json.loads((fixture_data / "runs" / run_id / "manifest.json").read_text())
