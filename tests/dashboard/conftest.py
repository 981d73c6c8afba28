"""Fixture runs for the dashboard tests (synthetic, schema-valid, written like real runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.fixture_runs import write_fixture_runs


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the runs "toy-a", "toy-b", "duo" and "vis" (see fixture_runs.py)."""
    return write_fixture_runs(tmp_path_factory.mktemp("dashboard-data"))
