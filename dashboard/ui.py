"""Streamlit pieces every page shares: the data directory, the run picker, "what to run" notes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analyses.results.store import StoreError
from dashboard import data

DATA_DIR_KEY = "data_dir"
RUN_KEY = "run"
MODEL_KEY = "model"
HEAD_PAGE = "views/head.py"
HEAD_KEY = "selected_head"  # (layer, head) picked on one page, shown on another
PENDING_RUN_KEY = "open_run"  # the run a click asked for (Compare's second map)
PENDING_HEAD_KEY = "open_head"  # the head a click asked for, applied before the pickers render
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def data_dir(argv: list[str] | None = None) -> Path:
    """The data directory fixed at launch (`-- --data DIR`); tests set it in session state."""
    if DATA_DIR_KEY not in st.session_state:
        import sys

        st.session_state[DATA_DIR_KEY] = str(data.data_dir_from_args(argv or sys.argv[1:]))
    return Path(st.session_state[DATA_DIR_KEY])


def scan_command(root: Path, probes: str | None = None) -> str:
    probes_flag = f" --probes {probes}" if probes else ""
    return f"headlab scan{probes_flag} --data {root}"


def missing(what: str, command: str) -> None:
    """Say what this run lacks and the command that produces it."""
    st.info(f"No {what} in this run — run:")
    st.code(command, language="bash")


def newest_first(root: Path) -> list[str]:
    """Run ids by creation time (from the manifests), newest first; ties by name."""
    return list(_newest_first_runs(root)["run_id"])


def _newest_first_runs(root: Path) -> pd.DataFrame:
    runs = data.runs(root)
    return runs.assign(created=runs["created"].fillna("")).sort_values(
        ["created", "run_id"], ascending=False
    )


def default_run(runs: pd.DataFrame) -> str:
    """The newest run with per-head results (a sweep of whole-model measures has none), else
    the newest run; `runs` is newest first."""
    with_heads = runs[runs["head_rows"] > 0]
    return str((with_heads if not with_heads.empty else runs)["run_id"].iloc[0])


def sidebar_run_picker(root: Path) -> str | None:
    """The model and run every page shows. `?model=…&run=…` in the URL picks them when valid
    (so a link is shareable); otherwise the newest run with per-head results."""
    try:
        runs = _newest_first_runs(root)
    except (OSError, StoreError) as error:
        st.sidebar.error(str(error))
        return None
    st.sidebar.caption(f"data: `{root}`")
    if runs.empty:
        return None
    ids = list(runs["run_id"])
    wanted = st.query_params.get(RUN_KEY)
    pending = st.session_state.pop(PENDING_RUN_KEY, None)
    if pending in ids:  # a click on another run's map (Compare) opens the head in that run
        st.session_state[RUN_KEY] = pending
        st.session_state.pop(MODEL_KEY, None)
    if st.session_state.get(RUN_KEY) not in ids:
        st.session_state[RUN_KEY] = wanted if wanted in ids else default_run(runs)
    models = list(dict.fromkeys(str(model) for model in runs["model"]))
    current_model = str(runs.loc[runs["run_id"] == st.session_state[RUN_KEY], "model"].iloc[0])
    if st.session_state.get(MODEL_KEY) not in models:
        asked = st.query_params.get(MODEL_KEY)
        st.session_state[MODEL_KEY] = asked if asked in models else current_model
    model = st.sidebar.selectbox("model", models, key=MODEL_KEY, on_change=_model_changed,
                                 args=(runs,))  # fmt: skip
    of_model = runs[runs["model"].astype(str) == model]
    choices = list(of_model["run_id"])
    if st.session_state[RUN_KEY] not in choices:
        st.session_state[RUN_KEY] = default_run(of_model)
    run_id = st.sidebar.selectbox("run", choices, key=RUN_KEY, format_func=_run_label(of_model))
    st.query_params.update({MODEL_KEY: model, RUN_KEY: run_id})
    running = of_model.loc[of_model["run_id"] == run_id, "running"].iloc[0]
    if running:
        st.sidebar.info(f"Still running: {running} (shown as far as they go; reload for more).")
    return run_id


def _model_changed(runs: pd.DataFrame) -> None:
    """A new model opens its own default run."""
    of_model = runs[runs["model"].astype(str) == st.session_state[MODEL_KEY]]
    st.session_state[RUN_KEY] = default_run(of_model)
    st.session_state.pop(HEAD_KEY, None)


def _run_label(runs: pd.DataFrame):
    kinds = dict(zip(runs["run_id"], runs["kind"].fillna(""), strict=True))
    heads = dict(zip(runs["run_id"], runs["head_rows"], strict=True))
    return lambda run: f"{run} ({kinds[run]}{'' if heads[run] else ', no per-head rows'})"


def open_head(layer: int, head: int, run: str | None = None) -> None:
    """Go to the head's page in the current run, or in `run` (a shareable URL:
    ?run&layer&head)."""
    st.session_state[HEAD_KEY] = st.session_state[PENDING_HEAD_KEY] = (layer, head)
    params = {key: st.query_params[key] for key in (MODEL_KEY, RUN_KEY) if key in st.query_params}
    if run is not None and run != params.get(RUN_KEY):
        st.session_state[PENDING_RUN_KEY] = run
        params = {RUN_KEY: run}
    st.switch_page(HEAD_PAGE, query_params={**params, "layer": str(layer), "head": str(head)})


def head_map_chart(figure: Any, key: str, run: str | None = None) -> None:
    """A layer × head heatmap where clicking a cell opens that head's page (in `run`, by
    default the current one)."""
    event = st.plotly_chart(figure, key=key, on_select="rerun", selection_mode="points")
    points = (event.selection.points if event else None) or []
    if points:
        open_head(int(points[0]["y"]), int(points[0]["x"]), run)


def head_table(table: pd.DataFrame, key: str) -> None:
    """A table of heads (with layer and head columns); selecting a row opens that head."""
    selection = st.dataframe(
        table, hide_index=True, key=key, on_select="rerun", selection_mode="single-row"
    )
    rows = selection.selection.rows if selection else []
    if rows:
        picked = table.iloc[rows[0]]
        open_head(int(picked["layer"]), int(picked["head"]))


@dataclass(frozen=True)
class RunContext:
    root: Path
    run_id: str
    manifest: dict[str, Any]
    table: pd.DataFrame

    @property
    def model(self) -> str:
        model = self.manifest.get("model") or {}
        return str(model.get("model")) if isinstance(model, dict) else str(model)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_layers, n_heads) from the manifest, else from the largest indices stored."""
        model = self.manifest.get("model") or {}
        if isinstance(model, dict) and model.get("n_layers") and model.get("n_heads"):
            return int(model["n_layers"]), int(model["n_heads"])
        heads = self.table[self.table["head"].notna()]
        if heads.empty:
            return 0, 0
        return int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1

    def probe_params(self, probe: str) -> dict[str, Any]:
        return (self.manifest.get("probes") or {}).get(probe) or {}


def no_runs(root: Path) -> None:
    where = "does not exist" if not root.exists() else "holds no runs yet"
    st.warning(f"The data directory `{root}` {where}.")
    st.markdown("Make a run (the sink probe on the default model takes about ten seconds):")
    st.code(f"{scan_command(root, 'sink,pattern')} --max-tokens 128", language="bash")
    st.markdown(
        "Then reload this page. To look at another directory: `headlab dashboard --data DIR`."
    )


def run_context() -> RunContext:
    """The selected run, loaded; stops the page with guidance when there is none or it is bad."""
    root = data_dir()
    run_id = st.session_state.get(RUN_KEY)
    if not run_id:
        no_runs(root)
        st.stop()
    try:
        return RunContext(root, run_id, data.manifest(root, run_id), data.results(root, run_id))
    except StoreError as error:
        st.error(f"Cannot read run `{run_id}`: {error}")
        st.stop()
        raise  # unreachable: st.stop() raises


def select_head(n_layers: int, n_heads: int, key_prefix: str) -> tuple[int, int]:
    """Layer and head pickers. A head opened by `open_head` (a click on another page or on
    this one), or named by `?layer&head` in the URL, is selected; else the last head chosen."""
    layer_key, head_key = f"{key_prefix}_layer", f"{key_prefix}_head"
    pending = st.session_state.pop(PENDING_HEAD_KEY, None)
    if pending is not None or layer_key not in st.session_state:
        layer, head = pending or _wanted_head()
        st.session_state[layer_key] = min(max(layer, 0), max(n_layers - 1, 0))
        st.session_state[head_key] = min(max(head, 0), max(n_heads - 1, 0))
    left, right = st.columns(2)
    layer = left.selectbox("layer", range(n_layers), key=layer_key)
    head = right.selectbox("head", range(n_heads), key=head_key)
    st.session_state[HEAD_KEY] = (layer, head)
    st.query_params.update({"layer": str(layer), "head": str(head)})
    return layer, head


def _wanted_head() -> tuple[int, int]:
    try:
        return int(st.query_params["layer"]), int(st.query_params["head"])
    except (KeyError, ValueError):
        return st.session_state.get(HEAD_KEY, (0, 0))
