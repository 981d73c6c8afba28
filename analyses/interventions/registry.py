"""The one registry of intervention kinds, name → class, and the names the kinds take (torch-free,
so plans and configs check them before torch loads). It knows no kind:
`analyses.interventions.kinds` registers the built-in ones when imported (SAELens-style), so
this module imports none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeGuard, TypeVar

if TYPE_CHECKING:
    from analyses.interventions.kinds import Intervention

AblationMode = Literal["zero", "mean", "uniform"]
ABLATION_MODES: tuple[AblationMode, ...] = ("zero", "mean", "uniform")


def is_ablation_mode(value: object) -> TypeGuard[AblationMode]:
    """Whether `value` is one of ABLATION_MODES (and so an `AblationMode`)."""
    return value in ABLATION_MODES


def check_fraction(value: float, what: str) -> None:
    """A share of attention (SoftPAG's u, ACT's β, a redistribution's keep) lies in [0, 1].
    A head scale α has no range: α < 0 flips the head's output, a legitimate experiment."""
    from probes.core.errors import ConfigError

    if not 0 <= value <= 1:  # NaN fails too
        raise ConfigError(f"{what} is a share of attention in [0, 1], got {value}")


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
