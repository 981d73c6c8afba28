"""The one registry of intervention kinds, name → class. It knows no kind:
`analyses.interventions.kinds` registers the built-in ones when imported (SAELens-style), so
this module imports none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from analyses.interventions.kinds import Intervention

INTERVENTIONS: dict[str, type[Intervention]] = {}
InterventionClass = TypeVar("InterventionClass", bound="type[Intervention]")


def register_intervention(cls: InterventionClass) -> InterventionClass:
    """Class decorator adding an intervention kind to the registry; duplicate names are refused."""
    if cls.name in INTERVENTIONS:
        raise ValueError(
            f"intervention {cls.name!r} is already registered by {INTERVENTIONS[cls.name]}"
        )
    INTERVENTIONS[cls.name] = cls
    return cls
