"""Stored top keys (probes/families/top_keys.py): the prompts' tokens and each head's top keys.

Side table "top_keys" holds one row per (prompt, layer, head): `keys` and `weights` (bytes,
weight = byte / 255), query after query, min(k, q + 1) entries for query q. Side table
"top_keys_prompts" holds each prompt's token text and the k it was stored with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from probes.core import schema

TOP_KEYS_PROBE = "top_keys"


@dataclass(frozen=True)
class TopKeysPrompt:
    """A prompt the top-keys probe stored: its token text and how many keys per query."""

    prompt: str
    text: tuple[str, ...]
    k: int

    @property
    def length(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class HeadTopKeys:
    """One head's top keys on one prompt, flat: query q's entries are
    keys[offsets[q]:offsets[q + 1]], largest weight first."""

    layer: int
    head: int
    keys: tuple[int, ...]
    weights: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    def of_query(self, query: int, k: int) -> list[tuple[int, float]]:
        """(key, weight) pairs of `query`, largest weight first."""
        start = entry_offset(query, k)
        stop = start + min(k, query + 1)
        return list(zip(self.keys[start:stop], self.weights[start:stop], strict=True))


def entry_offset(query: int, k: int) -> int:
    """Where query `query`'s entries start: Σ_{i < query} min(k, i + 1)."""
    ramp = min(query, k)  # queries 0 … ramp−1 hold 1 … ramp entries
    return ramp * (ramp + 1) // 2 + (query - ramp) * k


def top_keys_prompts(table: pd.DataFrame) -> dict[str, TopKeysPrompt]:
    """The stored prompts (side table "top_keys_prompts"), by prompt id."""
    found = {}
    for record in table.itertuples(index=False):
        text = record.text if record.text is not None else [f"<{i}>" for i in record.ids]
        found[str(record.prompt)] = TopKeysPrompt(
            str(record.prompt), tuple(str(t) for t in text), int(record.k)
        )
    return found


def head_top_keys(
    table: pd.DataFrame, prompt: TopKeysPrompt, heads: Iterable[tuple[int, int]]
) -> list[HeadTopKeys]:
    """The stored top keys of `heads` (in that order) on `prompt`, from side table "top_keys";
    a head without a row is left out. A row of the wrong size is a SchemaError."""
    rows = table[table["prompt"] == prompt.prompt]
    by_head = {(int(r.layer), int(r.head)): r for r in rows.itertuples(index=False)}
    expected = entry_offset(prompt.length, prompt.k)
    found = []
    for layer, head in heads:
        row = by_head.get((layer, head))
        if row is None:
            continue
        keys, weights = list(row.keys), list(row.weights)
        if len(keys) != expected or len(weights) != expected:
            raise schema.SchemaError(
                f"top_keys of L{layer}H{head} on {prompt.prompt!r}: {len(keys)} keys and "
                f"{len(weights)} weights, expected {expected} ({prompt.length} tokens, "
                f"k = {prompt.k})"
            )
        steps = schema.TOP_KEYS_WEIGHT_STEPS
        found.append(
            HeadTopKeys(
                layer,
                head,
                tuple(int(key) for key in keys),
                tuple(int(weight) / steps for weight in weights),
            )
        )
    return found


def head_filters(prompt: str, heads: Sequence[tuple[int, int]]) -> list[list[tuple]]:
    """Parquet filters (OR of ANDs) for the rows of `heads` on `prompt`."""
    return [
        [("prompt", "==", prompt), ("layer", "==", layer), ("head", "==", head)]
        for layer, head in heads
    ]
