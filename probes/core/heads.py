"""Naming attention heads: `Head(layer, head)`, read from a (layer, head) pair or a "L18H8" name.

The one parser of head arguments: interventions, the `headlab` facade and anything else a user
hands heads to read them here, so every spelling is accepted (or refused, naming the input) the
same way everywhere. Torch-free; integers from numpy or torch are accepted through `__index__`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from probes.core.errors import ConfigError

if TYPE_CHECKING:
    from probes.core.types import ModelInfo

_NAME = re.compile(r"^[Ll](\d+)[Hh](\d+)$")
HEAD_FORMS = "(layer, head) or a name like 'L18H8'"

# What head arguments accept: one head, or an iterable of them (see `heads_of`).
HeadLike: TypeAlias = "Head | Sequence[int] | str"
HeadsLike: TypeAlias = "HeadLike | Iterable[HeadLike]"


class Head(NamedTuple):
    """One attention head: `layer` and query-head index `head`, both from 0. Prints as "L18H8".

    A plain (layer, head) tuple underneath, so it works wherever a pair does.
    """

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def of(cls, value: Any, what: str = "head") -> Head:
        """`value` as a Head: a Head, a (layer, head) pair of whole numbers ≥ 0 (tuple, list,
        array) or a name like "L18H8". Anything else is a ConfigError naming `what` and `value`."""
        if isinstance(value, str):
            match = _NAME.match(value.strip())
            if match is None:
                raise ConfigError(f"{what}: a head name is like 'L18H8', got {value!r}")
            return cls(int(match[1]), int(match[2]))
        pair = _pair(_items(value))
        if pair is None:
            raise ConfigError(f"{what}: a head is {HEAD_FORMS}, got {value!r}")
        return cls(*pair)


def _index(value: Any) -> int | None:
    """`value` as a whole number (numpy and torch integers too), or None; bools are not."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _items(value: Any) -> list[Any] | None:
    """The elements of a non-text iterable, or None (a 0-d array is not iterable either)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return None
    try:
        return list(value)
    except TypeError:
        return None


def _pair(items: list[Any] | None) -> tuple[int, int] | None:
    """(layer, head) from two whole numbers ≥ 0, else None."""
    if items is None or len(items) != 2:
        return None
    layer, head = _index(items[0]), _index(items[1])
    if layer is None or head is None or layer < 0 or head < 0:
        return None
    return layer, head


def heads_of(value: Any, what: str = "heads") -> tuple[Head, ...]:
    """Heads from one head (a pair, a Head or a name) or any iterable of heads.

    `(18, 8)`, `[18, 8]`, `"L18H8"` and `Head(18, 8)` are one head; `[(18, 8), (3, 1)]` and
    `["L18H8", "L3H1"]` are two. A bare number, a malformed name or a repeated head is a
    ConfigError naming `what`.
    """
    if isinstance(value, str):
        return (Head.of(value, what),)
    items = _items(value)
    if items is None:
        raise ConfigError(
            f"{what}: give one head or a list of heads, each {HEAD_FORMS}; got {value!r}"
        )
    pair = _pair(items)
    if pair is not None:
        return (Head(*pair),)
    heads = tuple(Head.of(item, what) for item in items)
    repeated = sorted({str(head) for head in heads if heads.count(head) > 1})
    if repeated:
        raise ConfigError(f"{what}: {', '.join(repeated)} appears more than once")
    return heads


def check_in_model(heads: Iterable[tuple[int, int]], info: ModelInfo, what: str) -> None:
    """Every head exists in the model `info` describes; else a ConfigError naming it."""
    for layer, head in heads:
        if layer >= info.n_layers or head >= info.n_heads:
            raise ConfigError(
                f"{what}: head L{layer}H{head} does not exist in model {info.name!r} "
                f"({info.n_layers} layers × {info.n_heads} heads)"
            )
