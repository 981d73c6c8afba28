"""The one registry of probe families. It knows no family: `probes.families` registers them
(SAELens-style), so this leaf imports none of their modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from probes.core.probe import Probe

PROBES: dict[str, type[Probe]] = {}
ProbeClass = TypeVar("ProbeClass", bound="type[Probe]")


def register_probe(cls: ProbeClass) -> ProbeClass:
    """Class decorator adding a probe family to the registry; duplicate names are refused."""
    if cls.name in PROBES:
        raise ValueError(f"probe {cls.name!r} is already registered by {PROBES[cls.name]}")
    PROBES[cls.name] = cls
    return cls
