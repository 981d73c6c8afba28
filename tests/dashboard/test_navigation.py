"""Getting around with the head as the unit: the default run, the model and run in the URL, a
running sweep's chunks, one head across runs, Compare's shared scale (AppTest; the clicks
themselves are exercised in a real browser by test_browser.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analyses.results import store
from analyses.sweeps.parts import write_part
from tests.dashboard import fixture_runs as fx
from tests.dashboard.test_app import charts, open_page, table, texts


@pytest.fixture
def data_dir(fixture_data: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture runs, so a test may add runs."""
    return Path(shutil.copytree(fixture_data, tmp_path / "data"))


def newest_without_heads(data_dir: Path) -> None:
    """A newer run of run-level numbers only (e.g. a sweep of whole-model measures)."""
    rows = pd.DataFrame([{"probe": "sweep", "metric": "ioi.accuracy", "condition": "clean",
                          "value": 1.0, "model": "toy"}])  # fmt: skip
    manifest = {**fx.manifest("toy", fx.N_LAYERS, fx.N_HEADS, {}), "kind": "sweep",
                "created": "2026-02-01T00:00:00+00:00"}  # fmt: skip
    store.write_run(data_dir, "toy-clean-only", rows, manifest)


def test_the_default_run_is_the_newest_with_per_head_results(data_dir):
    newest_without_heads(data_dir)
    app = open_page(data_dir, "head_map")
    assert app.sidebar.selectbox(key="run").value == "toy-a"  # not the newer toy-clean-only
    assert app.query_params["run"] == ["toy-a"] or app.query_params["run"] == "toy-a"
    overview = open_page(data_dir)
    runs = table(overview, "run_id", "rows", "head_rows").set_index("run_id")
    assert runs.loc["toy-clean-only", "head_rows"] == 0 and runs.loc["toy-clean-only", "rows"] == 1


def test_the_run_and_model_in_the_url_are_kept_and_offered_per_model(data_dir):
    app = open_page(data_dir, "head_map", query={"run": "duo"})
    assert app.sidebar.selectbox(key="model").value == "duo"
    assert app.sidebar.selectbox(key="run").options == ["duo (scan)"]
    app.switch_page("views/sinks.py").run()
    assert app.sidebar.selectbox(key="run").value == "duo"  # the next page keeps it
    app.sidebar.selectbox(key="model").set_value("toy").run()
    assert app.sidebar.selectbox(key="run").value == "toy-a"  # the model's own default run


def test_a_running_sweeps_finished_chunks_are_shown_and_counted(data_dir):
    parts = data_dir / "runs" / "toy-b" / "sweep-live.parts"
    parts.mkdir()
    rows = [{"probe": "sweep", "metric": "ioi.logit_diff.harm", "condition": "zero",
             "layer": a, "head": b, "value": 0.1 * (4 * a + b)}
            for a in range(fx.N_LAYERS) for b in range(fx.N_HEADS)]  # fmt: skip
    write_part(parts, rows[:6], ["u0"])
    write_part(parts, rows[6:], ["u1"])
    app = open_page(data_dir, "sweeps", query={"run": "toy-b"})
    assert "Still running: sweep live: 2 chunks done" in " ".join(i.value for i in app.sidebar.info)
    grid = charts(app)["sweep_single"]["data"][0]["z"]
    assert grid[2][3] == pytest.approx(1.1)  # L2H3, from the second chunk
    assert "positive = the edit hurt" in texts(app)
    listing = store.list_runs(data_dir).set_index("run_id")
    assert listing.loc["toy-b", "rows"] == len(fx.sink_rows(reverse=True)) + len(rows)


def test_the_head_page_gathers_the_head_from_every_run_of_its_model(data_dir):
    app = open_page(data_dir, "head", query={"run": "toy-a", "layer": "2", "head": "3"})
    scores = table(app, "metric", "run", "percentile")
    alpha = scores[(scores["metric"] == "sink/alpha") & (scores["position"] == 0)]
    assert dict(zip(alpha["run"], alpha["rank"], strict=True)) == {"toy-a": 1, "toy-b": 12}
    assert "duo" not in set(scores["run"])  # another model's run is not this head
    assert [m.label for m in app.metric][:1] == ["local / global"]
    assert app.metric[0].value == "global"
    effects = table(app, "experiment", "measure", "rank")
    assert set(effects["run"]) == {"toy-a"} and (effects["n_heads"] > 1).all()
    similar = table(app, "name", "similarity")
    assert len(similar) == 5 and "L2H3" not in set(similar["name"])


def test_compare_shares_one_colour_scale_and_warns_when_settings_differ(data_dir):
    other = fx.manifest("toy", fx.N_LAYERS, fx.N_HEADS, {"sink": {"epsilon": 0.5}})
    other["prompts"] = {**other["prompts"], "max_tokens": 64}
    store.write_run(data_dir, "toy-c", pd.DataFrame(fx.sink_rows()).assign(model="toy"), other)
    app = open_page(data_dir, "compare")
    app.selectbox(key="compare_a").set_value("toy-a")
    app.selectbox(key="compare_b").set_value("toy-b").run()
    maps = charts(app)
    a, b = (maps[f"compare_map_{side}"]["data"][0] for side in "ab")
    assert (a["zmin"], a["zmax"]) == (b["zmin"], b["zmax"]) == (pytest.approx(1 / 12), 1.0)
    assert not [w for w in app.warning if "different settings" in w.value]  # same settings

    app.selectbox(key="compare_b").set_value("toy-c").run()
    (warning,) = [w.value for w in app.warning if "different settings" in w.value]
    assert "sink parameters" in warning and "max tokens" in warning
