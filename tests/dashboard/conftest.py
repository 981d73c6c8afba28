"""Fixture runs for the dashboard tests (synthetic, schema-valid, written like real runs)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.fixture_runs import write_fixture_runs


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the runs "toy-a", "toy-b", "duo" and "vis" (see fixture_runs.py)."""
    return write_fixture_runs(tmp_path_factory.mktemp("dashboard-data"))


@pytest.fixture(scope="session", autouse=True)
def _clean_streamlit_scratch() -> Iterator[None]:
    """streamlit's AppTest keeps its scripts in a module-level TemporaryDirectory that nothing
    closes, so interpreter exit warned "Implicitly cleaning up"; close it after the session."""
    yield
    app_test = sys.modules.get("streamlit.testing.v1.app_test")
    if app_test is not None:
        app_test.TMP_DIR.cleanup()
