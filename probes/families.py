"""Importing this module registers every built-in probe family."""

from probes import detectors  # noqa: F401
from probes import divergence  # noqa: F401
from probes import future_attention  # noqa: F401
from probes import pattern_classes  # noqa: F401
from probes import pattern_snapshots  # noqa: F401
from probes import retrieval  # noqa: F401
from probes import sinks  # noqa: F401
