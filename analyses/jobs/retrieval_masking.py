"""Masking retrieval heads: NIAH accuracy with the top-k retrieval heads masked vs k random heads.

After Wu et al. 2024 (nightdessert/Retrieval_Head, needle_in_haystack_with_mask.py):
- Top-k heads by `retrieval_score` from a stored `retrieval` run (ties: lower layer, then head).
  Random controls take as many heads per layer as the top-k set has, drawn from the heads outside
  it, for several seeds (the authors draw outside their top-100 list; a 72-head model has no
  such room). When a layer has too few heads left, the rest come from the nearest layers.
- Modes, both via `analyses.interventions.HeadAblation`: "uniform" is the authors' mask (the
  head's post-RoPE query set to 0, so it attends uniformly to every visible key and outputs the
  mean of V); "zero" sets the head's output to 0.
- As in the authors' script, masks act only while decoding: the prefill (all prompt tokens but
  the last) runs unmasked and its cache is shared by every condition; the last prompt token and
  the answer are decoded under the mask.
- All conditions of one sample decode together as rows of one batch from that shared cache, each
  row with its own mask (`interventions.stacked_hooks`).
Results go to the run as side tables `retrieval_masking` (accuracy per condition) and
`retrieval_masking_samples` (every decoded answer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from analyses.interventions.controls import layer_matched_random_heads
from analyses.results import manifest as manifests
from analyses.results import store
from analyses.results.ranking import rank_heads
from probes.core.errors import ConfigError, HeadlabError
from probes.core.options import (
    DATA_OPTION,
    DEFAULT_DATA,
    DTYPES,
    check_choices,
    check_device,
    check_dtype,
    check_positive,
)

Head = tuple[int, int]
SUMMARY_TABLE = "retrieval_masking"
SAMPLES_TABLE = "retrieval_masking_samples"
MODES = ("uniform", "zero")


class MaskingError(HeadlabError, ValueError):
    """The masking experiment cannot run as configured; the message says which setting."""


@dataclass(frozen=True)
class MaskingConfig:
    run_id: str = field(  # a stored run with the `retrieval` probe
        metadata={
            "metavar": "RUN",
            "help": "a run made with `headlab scan --probes retrieval`, or 'latest'",
        }
    )
    data_dir: Path = field(default=DEFAULT_DATA, metadata=DATA_OPTION)
    ks: tuple[int, ...] = field(default=(5, 10, 20), metadata={"help": "numbers of heads to mask"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "random-head seeds, one random set per seed and k"}
    )
    modes: tuple[str, ...] = field(
        default=MODES,
        metadata={
            "choices": MODES,
            "help": "uniform = the authors' mask (query 0), zero = zero output",
        },
    )
    # The NIAH grid; None keeps the run's own retrieval parameters.
    lengths: tuple[int, ...] | None = field(
        default=None, metadata={"help": "prompt lengths in tokens; none = the run's"}
    )
    depths: tuple[int, ...] | None = field(
        default=None, metadata={"help": "needle depths in percent; none = the run's"}
    )
    needles_per_cell: int | None = field(
        default=None, metadata={"help": "needles per (length, depth); none = the run's"}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "decoding steps; none = the run's"}
    )
    rows_per_batch: int = field(
        default=8,
        metadata={"help": "conditions decoded together; each holds a copy of the KV cache"},
    )
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N, mps"})
    dtype: str = field(
        default="float32",
        metadata={"choices": DTYPES, "help": "weights and activations (sums stay float32/64)"},
    )
    progress: bool = field(
        default=True, metadata={"flag": "--quiet", "invert": True, "help": "no progress bar"}
    )

    def __post_init__(self) -> None:
        for name in ("ks", "lengths", "depths"):
            values = getattr(self, name)
            if values is not None and not values:
                raise ConfigError(f"{name}: give at least one value")
        for k in self.ks:
            check_positive("ks", k)
        for length in self.lengths or ():
            check_positive("lengths", length)
        for depth in self.depths or ():
            if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 100:
                raise ConfigError(f"depths are whole percents in 0..100, got {depth!r}")
        check_choices("modes", self.modes, MODES)
        for name in ("needles_per_cell", "max_new_tokens"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_positive("rows_per_batch", self.rows_per_batch)
        check_device(self.device)
        check_dtype(self.dtype)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> MaskingConfig:
        """The config a stored masking result was made with (its side table's record)."""
        return manifests.config_from_record(cls, manifest["config"])


@dataclass(frozen=True)
class Condition:
    selection: str  # "none", "top" or "random"
    k: int
    mode: str | None
    seed: int | None
    heads: tuple[Head, ...]

    @property
    def label(self) -> str:
        if self.selection == "none":
            return "unmasked"
        seed = f",seed={self.seed}" if self.seed is not None else ""
        return f"{self.selection}-{self.k},{self.mode}{seed}"


def ranked_heads(table: pd.DataFrame, run_id: str) -> list[tuple[Head, float]]:
    """(head, retrieval score) of a run, best first (analyses.results.ranking's order)."""
    if table[(table["probe"] == "retrieval") & (table["metric"] == "retrieval_score")].empty:
        raise MaskingError(
            f"run {run_id!r} has no retrieval_score rows: run `headlab scan --probes retrieval` "
            "first (a run whose model answered no NIAH sample has none either)"
        )
    return rank_heads(table, "retrieval_score", probe="retrieval", source=f"run {run_id!r}")


def conditions(
    ranked: Sequence[Head],
    n_layers: int,
    n_heads: int,
    ks: Sequence[int],
    seeds: Sequence[int],
    modes: Sequence[str],
) -> list[Condition]:
    """Unmasked first, then for each k and mode: the top-k heads and one random set per seed."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise MaskingError(f"unknown masking modes {sorted(unknown)}; use {MODES}")
    too_big = [k for k in ks if not 1 <= k <= len(ranked)]
    if too_big:
        raise MaskingError(f"k must lie in [1, {len(ranked)}] (the scored heads), got {too_big}")
    result = [Condition("none", 0, None, None, ())]
    for k in ks:
        top = tuple(sorted(ranked[:k]))
        randoms = [
            (seed, layer_matched_random_heads(top, n_layers, n_heads, seed)) for seed in seeds
        ]
        for mode in modes:
            result.append(Condition("top", k, mode, None, top))
            result += [Condition("random", k, mode, seed, heads) for seed, heads in randoms]
    return result


def _retrieval_params(manifest: dict[str, Any], config: MaskingConfig, run_id: str):
    from probes.families.retrieval import RetrievalParams

    stored = manifest.get("probes", {}).get("retrieval")
    if stored is None:
        raise MaskingError(f"run {run_id!r} did not run the retrieval probe")
    known = {f.name for f in fields(RetrievalParams)}
    given: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known
    }
    params = RetrievalParams(**given)
    overrides = {
        name: getattr(config, name)
        for name in ("lengths", "depths", "needles_per_cell", "max_new_tokens")
        if getattr(config, name) is not None
    }
    return replace(params, **overrides)


def run(config: MaskingConfig, model: Any = None) -> pd.DataFrame:
    """Run the experiment on `config.run_id`; return (and store) NIAH accuracy per condition.

    `model` (a LoadedModel) skips loading the run's model; tests pass a planted one.
    """
    from tqdm.auto import tqdm

    from analyses.interventions.kinds import HeadAblation, stacked_hooks
    from analyses.interventions.registry import is_ablation_mode
    from probes import decoding as decode
    from probes.core.types import Hook
    from probes.families.retrieval import niah_samples
    from probes.models import load

    started = time.perf_counter()
    if config.rows_per_batch < 1:
        raise MaskingError(f"rows_per_batch must be at least 1, got {config.rows_per_batch}")
    manifest = store.read_manifest(config.data_dir, config.run_id)
    params = _retrieval_params(manifest, config, config.run_id)
    scores = dict(ranked_heads(store.load_run(config.data_dir, config.run_id), config.run_id))
    model_name = manifest["model"]["model"]
    if model is None:
        model = load(model_name, device=config.device, dtype=config.dtype)
    info = model.info
    plan = conditions(
        list(scores), info.n_layers, info.n_heads, config.ks, config.seeds, config.modes
    )
    samples = niah_samples(model, params)
    stop = decode.StopRule(model.tokenizer)
    copies = [
        [HeadAblation(c.heads, c.mode)] if c.heads and is_ablation_mode(c.mode) else []
        for c in plan
    ]

    def hooks_for(rows: list[int]) -> list[Hook]:
        return stacked_hooks([copies[i] for i in rows], info)

    records: list[dict[str, Any]] = []
    unmasked_correct = 0
    bar = tqdm(
        samples, unit="sample", desc=f"mask-retrieval {info.name}", disable=not config.progress
    )
    for sample in bar:
        answers = decode.decode_niah(
            model,
            sample,
            max_new_tokens=params.max_new_tokens,
            stop=stop,
            fwd_hooks=hooks_for,
            n_rows=len(plan),
            rows_per_batch=config.rows_per_batch,
        )
        for condition, answer in zip(plan, answers, strict=True):
            records.append(
                {
                    "condition": condition.label,
                    "selection": condition.selection,
                    "k": condition.k,
                    "mode": condition.mode,
                    "seed": condition.seed,
                    "sample_id": sample.id,
                    "length": sample.length,
                    "depth": sample.depth,
                    "response": answer.response,
                    "recall": answer.recall,
                    "correct": decode.answered(answer.recall, params.recall_threshold),
                }
            )
        unmasked_correct += records[-len(plan)]["correct"]
        bar.set_postfix(unmasked=f"{unmasked_correct}/{len(records) // len(plan)}")
    per_sample = pd.DataFrame(records)
    summary = summarise(per_sample, plan, scores)
    record = manifests.build(
        "mask-retrieval",
        config,
        model=model.provenance,
        run_id=config.run_id,
        retrieval=params.as_dict(),
        seconds=round(time.perf_counter() - started, 3),
    )
    directory = store.run_dir(config.data_dir, config.run_id)
    store.write_side_table(store.side_table_path(directory, SAMPLES_TABLE), per_sample, record)
    store.write_side_table(store.side_table_path(directory, SUMMARY_TABLE), summary, record)
    return summary


def summarise(
    per_sample: pd.DataFrame, plan: Sequence[Condition], scores: dict[Head, float]
) -> pd.DataFrame:
    """One row per condition: NIAH accuracy and mean recall, the heads and their lowest score."""
    rows = []
    for condition in plan:
        mine = per_sample[per_sample["condition"] == condition.label]
        rows.append(
            {
                "condition": condition.label,
                "selection": condition.selection,
                "k": condition.k,
                "mode": condition.mode,
                "seed": condition.seed,
                "n_samples": len(mine),
                "accuracy": float(mine["correct"].mean()),
                "recall": float(mine["recall"].mean()),
                "heads": ",".join(f"L{layer}H{head}" for layer, head in condition.heads),
                "min_score": min((scores[h] for h in condition.heads), default=float("nan")),
            }
        )
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """Accuracy per k: unmasked, top-k and random-k (mean ± spread over seeds) per mode."""
    unmasked = summary.loc[summary["selection"] == "none", "accuracy"].iloc[0]
    lines = [f"NIAH accuracy unmasked: {unmasked:.3f}"]
    masked = summary[summary["selection"] != "none"]
    for (k, mode), group in masked.groupby(["k", "mode"], sort=True):
        top = group.loc[group["selection"] == "top", "accuracy"].iloc[0]
        randoms = group.loc[group["selection"] == "random", "accuracy"]
        spread = f" (min {randoms.min():.3f}, max {randoms.max():.3f})" if len(randoms) > 1 else ""
        lines.append(f"k={k:<3} {mode:<8} top-k {top:.3f}   random-k {randoms.mean():.3f}{spread}")
    return "\n".join(lines)
