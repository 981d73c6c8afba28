"""Importing this module registers every built-in probe family."""

from probes import sinks  # noqa: F401
