"""Synthetic, schema-valid runs for the dashboard tests, with values chosen so every chart has a
known right answer. Written with analyses.store.write_run, like real runs.

Model "toy": 3 layers × 4 heads. Head (l, h) gets index i = 4·l + h, and:
  sink/alpha @k=0 = (i + 1) / 12 (L2H3 = 1 is the top head), @k>0 = 0.01·k
  sink/sink_rate  = 1 where α > ε = 0.3, else 0 (per position)
  sink/hidden_sink_count = h, hidden_sink_rate = h / 3
  retrieval/retrieval_score = 0.2 on L1H2 and L2H0, 0.01 elsewhere
  future_attention/mean_attention_distance = i; locality: i < 4 local, i ≥ 8 global
  pattern: L2H3 is a BOS head; every other head attends to the previous token
  top_keys: see fixture_top_keys.py
Runs, newest first: "toy-a" (everything), "toy-b" (sinks only, α reversed), "duo" (another
model, 2 × 2), "vis" (image prompts of model "toyvlm"; see fixture_vision.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analyses.results import store
from tests.dashboard import fixture_vision
from tests.dashboard.fixture_top_keys import TOP_KEYS_K, top_keys_tables

N_LAYERS, N_HEADS = 3, 4
EPSILON = 0.3
SINK_POSITIONS = 4
TOKENS = {
    "p0": ["<s>", " the", " cat", " sat", " on", " mat"],  # one token per block
    "p1": ["<s>", " a", " b", " c", " d", " e", " f", " g", " h", " i"],  # 2 tokens per block
}
BLOCK_STARTS = {"p0": [0, 1, 2, 3, 4, 5], "p1": [0, 2, 4, 6, 8]}
BOS_HEAD = (2, 3)
RETRIEVAL_HEADS = {(1, 2), (2, 0)}
NIAH = {(64, 0): 1.0, (64, 50): 1.0, (64, 100): 0.5, (128, 0): 1.0, (128, 50): 0.0, (128, 100): 0.5}
WAAD = [None, 1.0, 2.0, 3.0, 2.5, 1.5]  # position 0 is not scored
FAI = [0.4, 0.1, 0.3, None, None, None]
CLEAN = 3.0  # ioi.logit_diff without intervention
TOP_K = {1: 2.0, 2: 1.0}  # logit_diff with the top-k heads zeroed
RANDOM_K = {(1, 0): 2.9, (1, 1): 2.7, (2, 0): 2.8, (2, 1): 2.4}  # (k, seed) -> logit_diff
MASKED_K = {1: 1.5, 2: 0.5}  # logit_diff with the top-k retrieval heads masked
STRENGTHS = {0.0: 2.5, 1.0: 3.0, 2.0: 3.4}  # scale of L2H3 -> logit_diff


def index(layer: int, head: int) -> int:
    return layer * N_HEADS + head


def heads(n_layers: int = N_LAYERS, n_heads: int = N_HEADS):
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def alpha(layer: int, head: int, position: int, reverse: bool = False) -> float:
    if position > 0:
        return 0.01 * position
    i = index(layer, head)
    return (N_LAYERS * N_HEADS - i if reverse else i + 1) / (N_LAYERS * N_HEADS)


def sink_rows(n_layers: int = N_LAYERS, n_heads: int = N_HEADS, reverse: bool = False):
    rows: list[dict[str, Any]] = []
    for layer, head in heads(n_layers, n_heads):
        for k in range(SINK_POSITIONS):
            value = alpha(layer, head, k, reverse)
            base = {"probe": "sink", "layer": layer, "head": head, "position": k}
            rows.append({**base, "metric": "alpha", "value": value})
            rows.append({**base, "metric": "sink_rate", "value": float(value > EPSILON)})
        base = {"probe": "sink", "layer": layer, "head": head}
        rows.append({**base, "metric": "hidden_sink_count", "value": float(head)})
        rows.append({**base, "metric": "hidden_sink_rate", "value": head / 3})
    for layer in range(n_layers):
        rows.append(
            {
                "probe": "sink",
                "metric": "massive_ratio",
                "layer": layer,
                "position": 0,
                "condition": "sink_token",
                "value": 100.0 * (layer + 1),
            }
        )
        rows.append(
            {
                "probe": "sink",
                "metric": "massive_ratio",
                "layer": layer,
                "condition": "other_tokens",
                "value": 5.0,
            }
        )
    return rows


def pattern(layer: int, head: int, length: int) -> list[list[float]]:
    rows = [[0.0] * length for _ in range(length)]
    for query in range(length):
        key = 0 if (layer, head) == BOS_HEAD else max(query - 1, 0)
        rows[query][key] = 1.0
    return rows


def pooled(layer: int, head: int, prompt: str) -> list[list[float]]:
    """The pooling the pattern probe stores: mean over the block's queries of block mass."""
    length, starts = len(TOKENS[prompt]), BLOCK_STARTS[prompt]
    ends = [*starts[1:], length]
    full = pattern(layer, head, length)
    return [
        [
            sum(sum(full[q][k0:k1]) for q in range(q0, q1)) / (q1 - q0)
            for k0, k1 in zip(starts, ends, strict=True)
        ]
        for q0, q1 in zip(starts, ends, strict=True)
    ]


def pattern_rows():
    rows: list[dict[str, Any]] = []
    for prompt in TOKENS:
        for layer, head in heads():
            matrix = pooled(layer, head, prompt)
            for qb, row in enumerate(matrix):
                for kb in range(qb + 1):
                    rows.append(
                        {
                            "probe": "pattern",
                            "metric": "attention",
                            "layer": layer,
                            "head": head,
                            "prompt": prompt,
                            "position": qb,
                            "key_position": kb,
                            "value": row[kb],
                        }
                    )
    return rows


def pattern_prompts() -> pd.DataFrame:
    """The pattern probe's side table: each stored prompt's ids, text and block starts."""
    return pd.DataFrame(
        [
            {
                "prompt": prompt,
                "ids": list(range(len(text))),
                "text": text,
                "block_starts": BLOCK_STARTS[prompt],
            }
            for prompt, text in TOKENS.items()
        ]
    )


def retrieval_rows():
    rows: list[dict[str, Any]] = [
        {
            "probe": "retrieval",
            "metric": "retrieval_score",
            "layer": layer,
            "head": head,
            "value": 0.2 if (layer, head) in RETRIEVAL_HEADS else 0.01,
        }
        for layer, head in heads()
    ]
    for (length, depth), value in NIAH.items():
        for metric in ("niah_accuracy", "niah_recall"):
            rows.append(
                {
                    "probe": "retrieval",
                    "metric": metric,
                    "length": length,
                    "depth": depth,
                    "value": value,
                }
            )
    for metric in ("niah_accuracy", "niah_recall"):
        rows.append(
            {
                "probe": "retrieval",
                "metric": metric,
                "condition": "all",
                "value": sum(NIAH.values()) / len(NIAH),
            }
        )
    return rows


def future_rows():
    rows: list[dict[str, Any]] = []
    for layer, head in heads():
        i = index(layer, head)
        locality = "local" if i < 4 else "global" if i >= 8 else "middle"
        base = {"probe": "future_attention", "layer": layer, "head": head}
        rows.append({**base, "metric": "mean_attention_distance", "value": float(i)})
        rows.append({**base, "metric": "locality", "condition": locality, "value": i / 11})
    for position, token in enumerate(TOKENS["p0"]):
        for metric, series in (("waad", WAAD), ("fai", FAI)):
            if series[position] is not None:
                rows.append(
                    {
                        "probe": "future_attention",
                        "metric": metric,
                        "prompt": "p0",
                        "position": position,
                        "token": token,
                        "value": series[position],
                    }
                )
    return rows


def sweep_rows():
    """Conditions spelled by analyses.sweeps.plan.Unit, so a change of that format shows up here."""
    from analyses.sweeps.plan import Unit

    ranking = "sink/alpha@0"
    rows: list[dict[str, Any]] = [
        {"probe": "sweep", "metric": "ioi.logit_diff", "condition": "clean", "value": CLEAN}
    ]

    def add(unit: Unit, value: float, layer: int | None = None, head: int | None = None):
        where = {"probe": "sweep", "condition": unit.condition, "layer": layer, "head": head}
        rows.append({**where, "metric": "ioi.logit_diff", "value": value})
        rows.append({**where, "metric": "ioi.logit_diff.harm", "value": CLEAN - value})

    top = [(2, 3), (2, 2)]
    for k, value in TOP_K.items():
        add(Unit("ioi", "zero", tuple(top[:k]), group=f"top{k}:{ranking}"), value)
    for (k, seed), value in RANDOM_K.items():
        add(Unit("ioi", "zero", ((2, seed),), group=f"random{k}:{ranking}:seed{seed}"), value)
    for k, value in MASKED_K.items():  # masking retrieval heads: uniform attention
        add(
            Unit(
                "ioi",
                "uniform",
                tuple(sorted(RETRIEVAL_HEADS))[:k],
                group=f"top{k}:retrieval/retrieval_score",
            ),
            value,
        )
        add(
            Unit("ioi", "uniform", ((0, k),), group=f"random{k}:retrieval/retrieval_score:seed0"),
            CLEAN,
        )
    for strength, value in STRENGTHS.items():
        add(Unit("ioi", "scale", (BOS_HEAD,), strength, group="heads:L2H3"), value)
    for layer, head in heads():
        add(Unit("ioi", "zero", ((layer, head),)), CLEAN - 0.1 * index(layer, head), layer, head)
        rows.append(
            {
                "probe": "attribution",
                "metric": "ioi.logit_diff.harm",
                "condition": "zero",
                "layer": layer,
                "head": head,
                "value": 0.12 * index(layer, head),
            }
        )
    return rows


MASKING_ACCURACY = {  # (selection, k, seed) -> NIAH accuracy over two samples per condition
    ("none", 0, None): 1.0,
    ("top", 1, None): 0.5,
    ("random", 1, 0): 1.0,
    ("random", 1, 1): 1.0,
    ("top", 2, None): 0.0,
    ("random", 2, 0): 1.0,
    ("random", 2, 1): 0.5,
}


def masking_tables() -> dict[str, pd.DataFrame]:
    """The side tables of the retrieval probe and of analyses.retrieval_masking, built with the
    masking module's own `conditions` and `summarise`."""
    from analyses.jobs.retrieval_masking import conditions, summarise

    scores = {
        (layer, head): (0.2 if (layer, head) in RETRIEVAL_HEADS else 0.01)
        for layer, head in heads()
    }
    ranked = sorted(scores, key=lambda h: (-scores[h], h))
    plan = conditions(ranked, N_LAYERS, N_HEADS, ks=(1, 2), seeds=(0, 1), modes=("uniform",))
    records = []
    for condition in plan:
        accuracy = MASKING_ACCURACY[(condition.selection, condition.k, condition.seed)]
        for sample in range(2):
            correct = sample < 2 * accuracy
            records.append(
                {
                    "condition": condition.label,
                    "correct": correct,
                    "recall": 1.0 if correct else 0.0,
                }
            )
    samples = pd.DataFrame(
        [
            {
                "length": length,
                "depth": depth,
                "question": "What is the code?",
                "answer": "blue 42",
                "response": "blue 42" if value else "red",
                "recall": value,
                "correct": value > 0.5,
            }
            for (length, depth), value in NIAH.items()
        ]
    )
    return {
        "retrieval_masking": summarise(pd.DataFrame(records), plan, scores),
        "niah_samples": samples,
    }


def manifest(model: str, n_layers: int, n_heads: int, probes: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "scan",
        "created": "2026-01-03T00:00:00+00:00",
        "command": "headlab scan (synthetic test fixture)",
        "model": {"model": model, "n_layers": n_layers, "n_heads": n_heads, "dtype": "float32"},
        "prompts": {
            "name": "toy",
            "source": "fixture",
            "sha256": "0" * 64,
            "n_prompts": 2,
            "max_tokens": 10,
            "prompt_ids": list(TOKENS),
        },
        "probes": probes,
        "seed": 0,
        "versions": {"python": "3.11"},
        "git": {"commit": "f" * 40, "dirty": False},
    }


def write_fixture_runs(data_dir: Path) -> Path:
    """Write the three fixture runs under `data_dir`; return it."""
    sink_params = {"epsilon": EPSILON, "hidden_threshold": 0.1, "n_positions": SINK_POSITIONS}
    everything = pd.DataFrame(
        sink_rows() + pattern_rows() + retrieval_rows() + future_rows() + sweep_rows()
    )
    probes = {
        "sink": sink_params,
        "pattern": {"max_blocks": 5},
        "top_keys": {"k": TOP_KEYS_K, "n_prompts": 2, "prompt_ids": []},
        "retrieval": {},
        "future_attention": {"window": 10, "horizon_low": 10, "horizon_high": 50},
    }
    store.write_run(
        data_dir,
        "toy-a",
        everything.assign(model="toy"),
        manifest("toy", N_LAYERS, N_HEADS, probes),
        side_tables={
            **masking_tables(),
            "pattern_prompts": pattern_prompts(),
            **top_keys_tables(),
        },
    )
    later = manifest("toy", N_LAYERS, N_HEADS, {"sink": sink_params})
    store.write_run(
        data_dir,
        "toy-b",
        pd.DataFrame(sink_rows(reverse=True)).assign(model="toy"),
        {**later, "created": "2026-01-02T00:00:00+00:00"},
    )
    store.write_run(
        data_dir,
        "duo",
        pd.DataFrame(sink_rows(2, 2)).assign(model="duo"),
        {**manifest("duo", 2, 2, {"sink": sink_params}), "created": "2025-12-31T00:00:00+00:00"},
    )
    vision_probes = {"divergence": {"top_k": 2}, "sink": sink_params, "image_attention": {}}
    fixture_vision.write_vision_run(data_dir, manifest("toyvlm", 2, 2, vision_probes))
    return data_dir
