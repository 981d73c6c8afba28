"""Importing this module registers every built-in probe family."""

from probes import pattern_snapshots  # noqa: F401
from probes import sinks  # noqa: F401
