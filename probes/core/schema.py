"""The results schema: the one description of what every writer stores and every reader reads.

One tidy long table per run, one row per number:

    run_id, model, probe, metric     which run, model, probe family and metric
    layer, head                      the head (null head: a layer-level number; null layer: a
                                     prompt- or run-level one)
    position                         a position the number is about: the key position of α,
                                     the token index of a per-token number, a query block
    key_position                     the key block of a pooled attention cell
    prompt, token                    the prompt id and token text of per-token / per-prompt rows
    length, depth                    the NIAH cell (prompt length in tokens, needle depth in %)
    condition                        a named variant: a pattern class, a locality, a sweep unit
                                     (encoded by `SweepCondition`), "all" for an overall number
    value                            the number; NaN means NaN, a head not scored has no row

Probes declare their metrics here (`PROBE_METRICS`), so a renamed metric fails the registry
contract test instead of blanking a dashboard page, and readers ask `metric(probe, name)`.
Torch-free and import-free: the dashboard and the results store read it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMA_VERSION = 2

# column -> logical type ("int" nullable integer, "str", "float")
COLUMN_TYPES: dict[str, str] = {
    "run_id": "str",
    "model": "str",
    "probe": "str",
    "metric": "str",
    "layer": "int",
    "head": "int",
    "position": "int",
    "key_position": "int",
    "prompt": "str",
    "token": "str",
    "length": "int",
    "depth": "int",
    "condition": "str",
    "value": "float",
}
COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)
REQUIRED: frozenset[str] = frozenset({"run_id", "model", "probe", "metric", "value"})
# What a probe's rows may set (the engine adds probe; the scan adds model and run_id).
ROW_FIELDS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in ("run_id", "model", "probe"))

PROBE_METRICS: dict[str, tuple[str, ...]] = {
    "sink": (
        "alpha",
        "sink_rate",
        "hidden_sink_count",
        "hidden_sink_rate",
        "massive_ratio",
        "visual_sink_alpha",
        "visual_sink",
        "massive_visual_sink",
        "massive_visual_sink_count",
        "visual_sink_share",
        "image_centric_rate",
    ),
    "attention_stats": ("entropy", "entropy_normalized", "mean_attention_distance"),
    "detectors": ("previous_token", "duplicate_token", "induction"),
    "future_attention": ("mean_attention_distance", "locality", "waad", "fai"),
    "pattern_class": (
        "pattern_class",
        "recall_local",
        "recall_sink",
        "recall_vertical_slash",
        "recall_block_sparse",
    ),
    "pattern": ("attention",),
    "top_keys": ("top_k_mass",),
    "divergence": ("vhd", "t_vhd"),
    "image_attention": ("image_share",),
    "retrieval": ("retrieval_score", "niah_accuracy", "niah_recall"),
}

# Side tables: tables/<name>.parquet beside a run's results, any shape.
NIAH_SAMPLES_TABLE = "niah_samples"  # the retrieval probe's per-sample outcomes
PATTERN_PROMPTS_TABLE = "pattern_prompts"  # the pattern probe's prompts: ids, text, blocks
TOP_KEYS_TABLE = "top_keys"  # the top_keys probe: per prompt, layer, head the top keys per query
TOP_KEYS_PROMPTS_TABLE = "top_keys_prompts"  # the top_keys probe's prompts: ids, text, length, k
TOP_KEYS_WEIGHT_STEPS = 255  # a stored top-key weight is the byte round(255 · A)
IMAGE_ATTENTION_TABLE = "image_attention"  # per stored image prompt, layer, head: per-token weights
IMAGE_PROMPTS_TABLE = "image_prompts"  # the image_attention probe's images: thumbnail, token boxes
DIVERGENCE_ANSWERS_TABLE = (
    "divergence_answers"  # the divergence probe's answers and T-VHD per token
)
MASKING_TABLE = "retrieval_masking"  # mask-retrieval: accuracy per condition
MASKING_SAMPLES_TABLE = "retrieval_masking_samples"  # mask-retrieval: per sample and condition
SIDE_TABLES = (
    NIAH_SAMPLES_TABLE,
    PATTERN_PROMPTS_TABLE,
    TOP_KEYS_TABLE,
    TOP_KEYS_PROMPTS_TABLE,
    IMAGE_ATTENTION_TABLE,
    IMAGE_PROMPTS_TABLE,
    DIVERGENCE_ANSWERS_TABLE,
    MASKING_TABLE,
    MASKING_SAMPLES_TABLE,
)

# Probe names of rows that sweeps write (not registered probe families).
SWEEP_PROBE = "sweep"  # exact ablation / strength effects, task measures
ATTRIBUTION_PROBE = "attribution"  # attribution-patching estimates
CLEAN_CONDITION = "clean"  # the unedited task measures of a sweep
OVERALL_CONDITION = "all"  # an overall number beside per-cell ones (NIAH accuracy)


class SchemaError(ValueError):
    """A name the schema does not declare (a bug in the writer or reader that uses it)."""


def metric(probe: str, name: str) -> str:
    """`name`, checked to be a metric `probe` declares; readers spell metrics through this."""
    if name not in PROBE_METRICS.get(probe, ()):
        raise SchemaError(f"probe {probe!r} declares no metric {name!r}")
    return name


def sweep_metric(task: str, measure: str, harm: bool = False) -> str:
    """Metric name of a sweep row: the task's measure under the edit ("ioi.logit_diff"), or its
    harm ("ioi.logit_diff.harm"): how much worse the task got than clean, positive = worse
    (clean − edited for a measure where higher is better, edited − clean for a loss)."""
    return f"{task}.{measure}.harm" if harm else f"{task}.{measure}"


@dataclass(frozen=True)
class SweepCondition:
    """What one sweep unit did, as stored in `condition`: an intervention `kind` (ablation mode
    or strength kind) with its `strength`, applied to a head set — one head (no `selection`),
    the top-k or a random-k control of a `ranking` under a `seed`, or listed `heads`."""

    kind: str
    strength: float | None = None
    selection: str | None = None  # None (one head), "top", "random", "heads"
    k: int | None = None
    ranking: str | None = None
    seed: int | None = None
    heads: str | None = None  # "L3H1,L5H2" for selection "heads"

    @property
    def group(self) -> str | None:
        """The head-set part of the encoding (None for a single head)."""
        if self.selection in ("top", "random"):
            seed = "" if self.seed is None else f":seed{self.seed}"
            return f"{self.selection}{self.k}:{self.ranking}{seed}"
        if self.selection == "heads":
            return f"heads:{self.heads}"
        return None

    def encode(self) -> str:
        text = self.kind + ("" if self.strength is None else f"={self.strength:g}")
        return text if self.group is None else f"{text}|{self.group}"

    @classmethod
    def of_unit(cls, kind: str, strength: float | None, group: str | None) -> SweepCondition:
        """A sweep unit's condition from its kind, strength and head-set group text."""
        decoded = cls.decode(f"x|{group}") if group else cls("x")
        return cls(kind, strength, decoded.selection, decoded.k, decoded.ranking, decoded.seed,
                   decoded.heads)  # fmt: skip

    @classmethod
    def top_group(cls, k: int, ranking: str, seed: int | None = None, random: bool = False) -> str:
        """Group text of a top-k unit, or of its random-k control under `seed`."""
        group = cls("x", selection="random" if random else "top", k=k, ranking=ranking, seed=seed)
        return str(group.group)

    @classmethod
    def heads_group(cls, heads: tuple[tuple[int, int], ...]) -> str:
        """Group text of a unit on listed heads."""
        names = ",".join(f"L{layer}H{head}" for layer, head in heads)
        return str(cls("x", selection="heads", heads=names).group)

    @classmethod
    def decode(cls, condition: str) -> SweepCondition:
        """The inverse of `encode` (e.g. "zero|top4:sink/alpha@0", "scale=2|heads:L3H1")."""
        match = _CONDITION.match(condition)
        if match is None:
            return cls(kind=condition)
        strength = float(match["strength"]) if match["strength"] else None
        group = match["group"] or ""
        ranked = _RANKED.match(group)
        if ranked:
            return cls(
                match["kind"],
                strength,
                ranked["selection"],
                int(ranked["k"]),
                ranked["ranking"],
                int(ranked["seed"]) if ranked["seed"] else None,
            )
        if group.startswith("heads:"):
            return cls(match["kind"], strength, "heads", heads=group.removeprefix("heads:"))
        return cls(match["kind"], strength)


_CONDITION = re.compile(r"^(?P<kind>[A-Za-z_]+)(?:=(?P<strength>[^|]+))?(?:\|(?P<group>.+))?$")
_RANKED = re.compile(
    r"^(?P<selection>top|random)(?P<k>\d+):(?P<ranking>.+?)(?::seed(?P<seed>\d+))?$"
)
