"""Shared value types: model shape, hook pairs, padded batches, tokenized prompts, probe
parameters."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from probes.core.errors import ConfigError

Hook = tuple[str, Callable[..., Any]]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids of several prompts; `lengths` holds each prompt's true length."""

    tokens: torch.Tensor  # [batch, pos]
    lengths: torch.Tensor  # [batch]
    prompt_ids: tuple[str, ...]
    images: tuple[str | None, ...] = ()  # per row: the image file of an image prompt, or None

    @property
    def has_images(self) -> bool:
        return any(image is not None for image in self.images)

    @property
    def attention_mask(self) -> torch.Tensor:
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return (positions[None, :] < self.lengths[:, None]).long()

    @property
    def query_mask(self) -> torch.Tensor:
        """[batch, pos] float mask of real (non-padding) positions."""
        return self.attention_mask.to(torch.float32)


@dataclass(frozen=True)
class ValidatedParams:
    """Base for frozen parameters (of a probe, of a sweep task) recorded in a run's manifest.

    They validate themselves when built: every field must match its annotation (whole numbers,
    numbers, text, booleans, tuples of those; a list given for a tuple becomes one), then the
    subclass's `check` tests ranges. Both raise `ConfigError` naming the parameter, so a bad
    value fails before any model loads, from the CLI and from Python alike.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            value = _conformed(getattr(self, item.name), hints[item.name], self._name(item.name))
            object.__setattr__(self, item.name, value)
        self.check()

    def check(self) -> None:
        """Range checks of a subclass (raise ConfigError through `require`); default: none."""

    def require(self, condition: bool, name: str, expected: str) -> None:
        """Raise ConfigError for parameter `name` unless `condition` holds."""
        if not condition:
            value = getattr(self, name)
            raise ConfigError(f"{self._name(name)} must be {expected}, got {value!r}")

    def _name(self, field_name: str) -> str:
        return f"{type(self).__name__}.{field_name}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbeParams(ValidatedParams):
    """Base for a probe's frozen parameters (see ValidatedParams)."""


def _conformed(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against a simple annotation (int, float, str, bool, tuple[T, ...], and
    any of those or None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        return _conformed(value, options[0], where) if len(options) == 1 else value
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise ConfigError(f"{where} must be a list of values, got {value!r}")
        element = args[0] if args else Any
        return tuple(_conformed(item, element, where) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"{where} must be a number, got NaN")
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be text, got {value!r}")
    return value


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt's id and its token ids (BOS first); an image prompt's `image` is its image file,
    and its tokens hold the model's image tokens where the image goes."""

    id: str
    tokens: tuple[int, ...]
    image: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model's shape: layers, query heads, KV heads (GQA), head and model width, context
    length, its BOS token id (None when it has none) and its vocabulary size (the logits per
    position; None where unknown)."""

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    bos_token_id: int | None
    d_vocab: int | None = None

    def kv_head(self, head: int) -> int:
        """The key/value head a query head reads under grouped-query attention."""
        return head // (self.n_heads // self.n_kv_heads)
