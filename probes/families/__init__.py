"""Every built-in probe family, one module per probe (file name == probe name), registered here.

Families depend on `probes.core` (and on inputs, models, the bridge adapter), never on one
another or on the engine. Look probes up through `get_probe` / `registered_probes`, which make
sure the built-in families are registered first.
"""

from __future__ import annotations

from probes.core.errors import HeadlabError
from probes.core.probe import Probe
from probes.core.registry import PROBES


class UnknownProbeError(HeadlabError, KeyError):
    """A probe name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def _register_builtins() -> None:
    # Importing a family module runs its @register_probe decorator.
    from probes.families import (  # noqa: F401
        attention_stats,
        detectors,
        divergence,
        future_attention,
        image_attention,
        pattern,
        pattern_class,
        retrieval,
        sink,
        top_keys,
    )


def get_probe(name: str) -> type[Probe]:
    """The registered probe family called `name`."""
    _register_builtins()
    if name not in PROBES:
        raise UnknownProbeError(
            f"unknown probe {name!r}; registered probes: {', '.join(sorted(PROBES))}"
        )
    return PROBES[name]


def registered_probes() -> dict[str, type[Probe]]:
    """Every registered probe family by name."""
    _register_builtins()
    return dict(PROBES)
