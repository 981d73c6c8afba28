"""Importing this module registers every built-in probe family."""

from probes import (
    detectors,  # noqa: F401
    divergence,  # noqa: F401
    future_attention,  # noqa: F401
    pattern_classes,  # noqa: F401
    pattern_snapshots,  # noqa: F401
    retrieval,  # noqa: F401
    sinks,  # noqa: F401
)
