"""The streaming probe engine: every selected probe's hooks in one forward pass per batch.

Each hook reduces its layer's activation on the spot and keeps nothing, so peak memory holds one
layer's attention pattern, never n_layers × T² of them.

`run` is `prepare` (bind, plan the passes), `stream` (each batch through its probes, yielding
the probes' per-batch states), `fold` (the states combined in batch order), `restore` and
`table`. A sharded scan (analyses.jobs.scan_work) streams some batches per process and folds
all of them in the same order afterwards, so its numbers equal `run`'s bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from probes import bridge
from probes.core import schema
from probes.core.errors import ConfigError
from probes.core.options import ENGINE_PATHS, check_engine_path
from probes.core.probe import GenerativeProbe, Probe, State, StreamingProbe
from probes.core.shards import Shard, n_batches
from probes.core.types import Batch, Hook
from probes.engine import fast
from probes.engine.passes import Pass, batches, plan_passes
from probes.inputs.images import image_kwargs, vision_of
from probes.inputs.prompts import PromptSuite
from probes.models import LoadedModel

RESULT_COLUMNS = ["probe", *schema.ROW_FIELDS]
BatchStates = dict[int, State]  # probe (its index in the list run) -> its state after a batch


PATHS = ENGINE_PATHS


def choose_path(model: LoadedModel, probes: Sequence[Probe], path: str) -> str:
    """'fast' (probes/engine/fast.py) when every probe is a StreamingProbe, the model's layers
    are reachable and no hooks are attached to the bridge; 'bridge' (TransformerLens hooks on
    whole patterns) otherwise."""
    check_engine_path(path)
    if path == "bridge":
        return "bridge"
    outside = bridge.hooked_points(model)
    if outside:  # the fast path runs the unwrapped model: hooks set around the scan would not run
        if path == "fast":
            raise ConfigError(
                f"the fast path bypasses the bridge, but hooks are attached to {outside[:3]} of "
                f"model {model.info.name!r}; use the bridge path (--path bridge; path='bridge' in "
                "Python) or auto"
            )
        return "bridge"
    if fast.supports(model, probes):
        return "fast"
    if path == "fast":
        others = [p.name for p in probes if not isinstance(p, StreamingProbe)]
        raise ConfigError(
            f"the fast path cannot run probes {others or [p.name for p in probes]} on model "
            f"{model.info.name!r}; use the bridge path (--path bridge; path='bridge' in Python) "
            "or auto"
        )
    return "bridge"


def run_batch(
    model: LoadedModel,
    batch: Batch,
    probes: Sequence[Probe],
    extra_hooks: Sequence[Hook] = (),
    path: str = "bridge",
) -> None:
    """One batch through every probe: their hooks in one forward pass, then `end_batch`.

    `extra_hooks` run before the probes' hooks on the same hook point (tests plant patterns so);
    they need the bridge path, and so do image prompts (their pixels go to the bridge).
    """
    if not batch.has_images and choose_path(model, probes, path) == "fast" and not extra_hooks:
        streaming = [probe for probe in probes if isinstance(probe, StreamingProbe)]
        if len(streaming) != len(probes):  # choose_path never picks "fast" for other probes
            raise RuntimeError("the fast path was chosen for probes that are not StreamingProbes")
        fast.run_batch(model, batch, streaming)
        return
    fwd_hooks = list(extra_hooks) + [hook for probe in probes for hook in probe.hooks(batch)]
    images: dict[str, Any] = image_kwargs(model, batch.images, batch.tokens)  # pixel_values, if any
    bridge.forward(
        model,
        batch.tokens,
        fwd_hooks,
        attention_mask=batch.attention_mask,
        return_type=None,
        **images,
    )
    for probe in probes:
        probe.end_batch(batch)


def run(
    model: LoadedModel,
    probes: Sequence[Probe],
    suite: PromptSuite,
    *,
    batch_size: int = 4,
    max_tokens: int | None = 256,
    progress: bool = True,
    path: str = "auto",
) -> pd.DataFrame:
    """Run `suite` through `model` with all `probes` streaming; return their tidy rows.

    `path`: "auto" takes the fast path (exact pattern rows from queries and keys beside the
    model's own attention) when all probes of a pass allow it, else the bridge's hooks;
    "bridge" or "fast" force one.
    """
    if not probes:
        raise ConfigError("no probes selected")
    passes = prepare(model, probes, suite, max_tokens, batch_size)
    n_tokens = sum(len(prompt.tokens) for each in passes for prompt in each.prompts)
    totals: BatchStates = {}
    with tqdm(
        total=n_tokens,
        unit="tok",
        desc=f"scan {model.info.name}",
        disable=not progress or not n_tokens,
    ) as bar:
        for _, batch, states in stream(model, probes, passes, batch_size=batch_size, path=path):
            fold(probes, totals, states)
            bar.update(int(batch.lengths.sum()))
    restore(probes, totals)
    for probe in probes:
        if isinstance(probe, GenerativeProbe):
            probe.generate(model, progress=progress)
    return table(probes)


def prepare(
    model: LoadedModel,
    probes: Sequence[Probe],
    suite: PromptSuite,
    max_tokens: int | None,
    batch_size: int,
) -> list[Pass]:
    """Claim and bind the probes, and plan their passes (the generative ones have none)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}")
    for probe in probes:
        probe.claim()
    for probe in probes:
        probe.bind(model)
    if suite.has_images:
        vision_of(model)  # a text model is refused before any pass
    return plan_passes(model, probes, suite, max_tokens)


def stream(
    model: LoadedModel,
    probes: Sequence[Probe],
    passes: Sequence[Pass],
    *,
    batch_size: int,
    path: str = "auto",
    shard: Shard | None = None,
) -> Iterator[tuple[Pass, Batch, BatchStates]]:
    """Each batch of the passes (of `shard`'s share of each pass, if given) through its probes;
    yields its pass, the batch and every probe's state after it (`Probe.take`), in order."""
    index = {id(probe): number for number, probe in enumerate(probes)}
    for each in passes:
        chosen = pass_path(model, each, path)
        select = shard.batches(n_batches(len(each.prompts), batch_size)) if shard else None
        for batch in batches(
            each.prompts, batch_size, model.pad_id, model.device, each.keep_order, select
        ):
            run_batch(model, batch, each.probes, path=chosen)
            yield each, batch, {index[id(probe)]: probe.take() for probe in each.probes}


def fold(probes: Sequence[Probe], totals: BatchStates, states: BatchStates) -> None:
    """Fold one batch's `states` (or a later run of batches') into `totals`, in place."""
    for number, state in states.items():
        earlier = totals.get(number)
        totals[number] = state if earlier is None else probes[number].combine(earlier, state)


def restore(probes: Sequence[Probe], totals: BatchStates) -> None:
    """Give each probe its folded totals (a probe that saw no batch keeps its empty ones)."""
    for number, state in totals.items():
        probes[number].restore(state)


def table(probes: Sequence[Probe]) -> pd.DataFrame:
    """The probes' finished rows as one frame (RESULT_COLUMNS), checked against the schema."""
    frames = [pd.DataFrame(checked_rows(probe)).assign(probe=probe.name) for probe in probes]
    rows = pd.concat(frames, ignore_index=True)
    for column in RESULT_COLUMNS:
        if column not in rows:
            rows[column] = None
    return rows[RESULT_COLUMNS]


def pass_path(model: LoadedModel, each: Pass, path: str) -> str:
    """The engine path of one pass: image prompts take the bridge (their pixels go through the
    bridge's vision tower; the fast path would also hand it the vision tower's attention)."""
    if not any(prompt.image for prompt in each.prompts):
        return choose_path(model, each.probes, path)
    if path == "fast":
        raise ConfigError(
            "the fast path does not take image prompts; use the bridge path (--path bridge; "
            "path='bridge' in Python) or auto"
        )
    return "bridge"


def checked_rows(probe: Probe) -> list[dict[str, Any]]:
    """A probe's rows, checked against the results schema: known columns, declared metrics."""
    rows = probe.rows()
    declared = schema.PROBE_METRICS.get(probe.name)
    for row in rows:
        unknown = set(row) - set(schema.ROW_FIELDS)
        if unknown or "metric" not in row or "value" not in row:
            raise schema.SchemaError(
                f"probe {probe.name!r} wrote a row with columns {sorted(row)}; the results "
                f"schema has {list(schema.ROW_FIELDS)} (metric and value required)"
            )
        if declared is not None and row["metric"] not in declared:
            raise schema.SchemaError(
                f"probe {probe.name!r} wrote metric {row['metric']!r}, which probes/core/"
                f"schema.py does not declare for it (declared: {list(declared)})"
            )
    return rows
