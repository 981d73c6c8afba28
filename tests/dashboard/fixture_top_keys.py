"""The top_keys side tables of the fixture run "toy-a" (tests/dashboard/fixture_runs.py), k = 2:
L2H3 puts 0.8 on BOS and 0.2 on itself; every other head 0.75 on the previous token and 0.25 on
itself (query 0: 1.0 on itself). Prompts "html" (token text that is markup, to be shown as text)
and "prose" (a few hundred word tokens)."""

from __future__ import annotations

from itertools import product

import pandas as pd

from probes.core import schema

N_LAYERS, N_HEADS = 3, 4  # as fixture_runs
BOS_HEAD = (2, 3)
TOP_KEYS_K = 2
HTML_TOKENS = ["<s>", "</script><img src=x onerror=alert(1)>", " a", " <b>bold</b>", " &amp;",
               " b", "\n", " c", "<!--", " d", " e", " f"]  # fmt: skip
PROSE_TOKENS = ["<s>"] + [
    f" {word}"
    for word in (
        "the cat sat on the mat and the dog ran to the "
        "park while the bird sang in the tree and the sun rose over the hill " * 12
    ).split()
]
TOP_KEYS_TOKENS = {"html": HTML_TOKENS, "prose": PROSE_TOKENS}


def top_key_entries(layer: int, head: int, query: int) -> list[tuple[int, float]]:
    """(key, weight) pairs of a query as the top_keys probe stores them: largest first."""
    if query == 0:
        return [(0, 1.0)]
    if (layer, head) == BOS_HEAD:
        return [(0, 0.8), (query, 0.2)]
    return [(query - 1, 0.75), (query, 0.25)]


def top_keys_tables() -> dict[str, pd.DataFrame]:
    """The top_keys probe's side tables: keys and weight bytes (round(255 · w)) per head."""
    records = []
    for prompt, text in TOP_KEYS_TOKENS.items():
        for layer, head in product(range(N_LAYERS), range(N_HEADS)):
            entries = [e for q in range(len(text)) for e in top_key_entries(layer, head, q)]
            records.append(
                {
                    "prompt": prompt,
                    "layer": layer,
                    "head": head,
                    "keys": [key for key, _ in entries],
                    "weights": [round(w * schema.TOP_KEYS_WEIGHT_STEPS) for _, w in entries],
                }
            )
    prompts = pd.DataFrame(
        [
            {"prompt": p, "ids": list(range(len(t))), "text": t, "length": len(t), "k": TOP_KEYS_K}
            for p, t in TOP_KEYS_TOKENS.items()
        ]
    )
    return {schema.TOP_KEYS_TABLE: pd.DataFrame(records), schema.TOP_KEYS_PROMPTS_TABLE: prompts}
