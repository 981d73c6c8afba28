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
HEAD_KEY = "selected_head"  # (layer, head) picked on one page, shown on another
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
    runs = data.runs(root)
    ordered = runs.assign(created=runs["created"].fillna("")).sort_values(
        ["created", "run_id"], ascending=False
    )
    return list(ordered["run_id"])


def sidebar_run_picker(root: Path) -> str | None:
    """The run every page shows, newest first; `?run=<id>` in the URL picks it when valid."""
    try:
        ids = newest_first(root)
    except (OSError, StoreError) as error:
        st.sidebar.error(str(error))
        return None
    st.sidebar.caption(f"data: `{root}`")
    if not ids:
        return None
    wanted = st.query_params.get(RUN_KEY)
    if st.session_state.get(RUN_KEY) not in ids:
        st.session_state[RUN_KEY] = wanted if wanted in ids else ids[0]
    run_id = st.sidebar.selectbox("run", ids, key=RUN_KEY)
    st.query_params[RUN_KEY] = run_id
    return run_id


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
    """Layer and head pickers, starting from the head last chosen on any page (or `?layer&head`)."""
    layer, head = st.session_state.get(HEAD_KEY, (None, None))
    if layer is None:
        try:
            layer = int(st.query_params.get("layer", 0))
            head = int(st.query_params.get("head", 0))
        except ValueError:
            layer, head = 0, 0
    layer = min(max(layer, 0), max(n_layers - 1, 0))
    head = min(max(head, 0), max(n_heads - 1, 0))
    left, right = st.columns(2)
    layer = left.selectbox("layer", range(n_layers), index=layer, key=f"{key_prefix}_layer")
    head = right.selectbox("head", range(n_heads), index=head, key=f"{key_prefix}_head")
    st.session_state[HEAD_KEY] = (layer, head)
    return layer, head
