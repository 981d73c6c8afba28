"""Stored attention patterns (probes/families/pattern.py): prompts, one head's pooled cells."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from probes.core import schema

PATTERN_PROBE = "pattern"  # its rows are pooled patterns, not per-head scores


PATTERN_METRIC = schema.metric(PATTERN_PROBE, "attention")


@dataclass(frozen=True)
class PromptTokens:
    """A prompt stored by the pattern probe: its token text and where each block starts."""

    prompt: str
    text: tuple[str, ...]
    block_starts: tuple[int, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.block_starts)

    def block_text(self, block: int) -> str:
        end = self.block_starts[block + 1] if block + 1 < self.n_blocks else len(self.text)
        return "".join(self.text[self.block_starts[block] : end])


def pattern_prompts(prompts: pd.DataFrame) -> dict[str, PromptTokens]:
    """The pattern probe's prompts (its side table "pattern_prompts": prompt, ids, text,
    block_starts), by prompt id."""
    found = {}
    for record in prompts.itertuples(index=False):
        text = record.text if record.text is not None else [f"<{i}>" for i in record.ids]
        found[str(record.prompt)] = PromptTokens(
            str(record.prompt),
            tuple(str(t) for t in text),
            tuple(int(b) for b in record.block_starts),
        )
    return found


def pattern_cells(table: pd.DataFrame, layer: int, head: int, prompt: str) -> pd.DataFrame:
    """query_block, key_block, value of one head's pooled pattern on one prompt."""
    rows = table[
        (table["probe"] == PATTERN_PROBE)
        & (table["metric"] == PATTERN_METRIC)
        & (table["layer"] == layer)
        & (table["head"] == head)
        & (table["prompt"] == prompt)
    ]
    return pd.DataFrame(
        {
            "query_block": rows["position"].astype("int64"),
            "key_block": rows["key_position"].astype("int64"),
            "value": rows["value"].astype("float64"),
        }
    ).reset_index(drop=True)


def pattern_matrix(cells: pd.DataFrame, n_blocks: int) -> list[list[float | None]]:
    """query_block × key_block matrix of pooled attention; blocks not stored (above the causal
    diagonal) are None, so the figure leaves them blank rather than drawing zeros."""
    matrix: list[list[float | None]] = [[None] * n_blocks for _ in range(n_blocks)]
    for query, key, value in cells[["query_block", "key_block", "value"]].itertuples(index=False):
        matrix[int(query)][int(key)] = float(value)
    return matrix
