"""A sharded scan's work: the items it is cut into and the worker that computes them.

Items, per model (its index in the job's configs):

    shard k     shard k of `config.shards` of every pass's batches (probes.core.shards): the
                passes of the probes that read prompts, streamed, each batch's probe states kept
    generate    the generative probes (retrieval) decoding their own samples, their states
    merge       every part's states folded in batch order, then rows and side tables

A shard or generate item's outcome is a part: the states as bytes (`torch.save` of tensors,
numbers, text, lists and dicts; read back with `weights_only=True`, so nothing is unpickled).
The states of each batch are what `probes.engine.run` folds for an unsharded scan, and the
merge folds them in the same order, so the rows equal the unsharded scan's bit for bit, on
any executor (given equal torch threads).

A `ScanWorker` keeps the model of its last item loaded and loads another when an item of
another model arrives; it returns outcomes and never writes (the driver writes every part).
"""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch

from analyses.jobs.scan import ScanConfig, build_probes
from probes import engine
from probes.core.probe import GenerativeProbe
from probes.core.shards import Shard

if TYPE_CHECKING:
    from probes.inputs.prompts import PromptSuite
    from probes.models import LoadedModel


@dataclass(frozen=True)
class ScanItem:
    """One part to compute (shard, generate) or the merge of a model's parts."""

    model: int  # the config's index in the job
    kind: Literal["shard", "generate", "merge"]
    shard: int = 0
    # merge: the parts (file name, bytes), in fold order
    parts: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ScanResult:
    """A merged model: its rows (model column set), side tables and probe parameters."""

    rows: pd.DataFrame
    side_tables: dict[str, pd.DataFrame]
    probes: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ScanOutcome:
    """What a worker returns: a part (`payload`) or a merged `result`, and how it ran."""

    worker: str  # host:pid
    threads: int
    provenance: dict[str, Any]
    load_s: float  # loading the model for this item (0 when it was loaded already)
    compute_s: float
    payload: bytes = field(default=b"", repr=False)
    result: ScanResult | None = None


def part_name(item: ScanItem, shards: int) -> str:
    """The part file an item's outcome is kept as (fold order = sorted order)."""
    if item.kind == "generate":
        return "part-generate.pt"
    return f"part-shard-{item.shard:04d}-of-{shards:04d}.pt"


def dumps(states: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(states, buffer)
    return buffer.getvalue()


def loads(payload: bytes, where: str) -> Any:
    """A part's states, read without unpickling code; a damaged part names itself."""
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # torch raises several kinds for a foreign or damaged file
        from analyses.results.store import StoreError

        raise StoreError(f"scan part {where} cannot be read ({type(error).__name__}); move it "
                         "out of the way and rerun to compute it again") from None  # fmt: skip


def streams(probes: Sequence[Any]) -> bool:
    """Whether some probe reads prompts in forward passes (else there is nothing to shard)."""
    return any(not isinstance(probe, GenerativeProbe) for probe in probes)


@dataclass(frozen=True)
class ScanJob:
    """What a process needs to compute a scan's items (picklable; analyses.executors): one
    config per model, all with the same settings, and the prompt suite itself (workers need
    no copy of the prompt file)."""

    configs: tuple[ScanConfig, ...]
    suite: PromptSuite

    def worker(self, model: LoadedModel | None = None) -> ScanWorker:
        return ScanWorker(self, model)


class ScanWorker:
    """Computes a scan's items (see the module docstring)."""

    def __init__(self, job: ScanJob, model: LoadedModel | None = None) -> None:
        self.job, self.model = job, model
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def _load(self, config: ScanConfig) -> tuple[LoadedModel, float]:
        if self.model is not None and self.model.info.name == config.model:
            return self.model, 0.0
        from probes.models import load

        self.model = None  # one model at a time: drop the last before the next loads
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        self.model = load(config.model, device=config.device, dtype=config.dtype)
        return self.model, time.perf_counter() - started

    def compute(self, item: ScanItem, progress: Callable[[int], None] | None = None) -> ScanOutcome:
        """The part (or the merged result) of `item`; `progress(n)` after each batch of n
        suite prompts."""
        config = self.job.configs[item.model]
        model, load_s = self._load(config)
        started = time.perf_counter()
        probes = build_probes(config, model)
        payload, result = b"", None
        if item.kind == "shard":
            payload = dumps(self._shard(config, model, probes, item.shard, progress))
        elif item.kind == "generate":
            # In this process (a progress callback) a decoding probe shows its own bar, one
            # tick a sample: the scan's bar counts suite prompts, which such a probe never
            # reads, so it would stand still for the whole decode. A Ray worker shows none.
            shown = progress is not None and config.progress
            payload = dumps(_generate(model, probes, progress=shown))
        else:
            result = _merge(config, model, probes, item.parts)
        return ScanOutcome(
            worker=self.name,
            threads=torch.get_num_threads(),
            provenance=dict(model.provenance),
            load_s=round(load_s, 3),
            compute_s=round(time.perf_counter() - started, 3),
            payload=payload,
            result=result,
        )

    def _shard(
        self,
        config: ScanConfig,
        model: LoadedModel,
        probes: list[Any],
        index: int,
        progress: Callable[[int], None] | None,
    ) -> list[engine.BatchStates]:
        passes = engine.prepare(model, probes, self.job.suite, config.max_tokens,
                                config.batch_size)  # fmt: skip
        states = []
        shard = Shard(index, config.shards)
        for each, batch, batch_states in engine.stream(
            model, probes, passes, batch_size=config.batch_size, path=config.path, shard=shard
        ):
            states.append(batch_states)
            if progress is not None and each.of_suite:
                progress(len(batch.prompt_ids))
        return states


def _generate(
    model: LoadedModel, probes: list[Any], *, progress: bool = False
) -> list[engine.BatchStates]:
    states: engine.BatchStates = {}
    for number, probe in enumerate(probes):
        if isinstance(probe, GenerativeProbe):
            probe.claim()
            probe.bind(model)
            probe.generate(model, progress=progress)
            states[number] = probe.take()
    return [states]


def _merge(
    config: ScanConfig, model: LoadedModel, probes: list[Any], parts: Sequence[tuple[str, bytes]]
) -> ScanResult:
    for probe in probes:
        probe.claim()
        probe.bind(model)
    totals: engine.BatchStates = {}
    for name, payload in parts:
        for states in loads(payload, f"{name} of model {config.model!r}"):
            engine.fold(probes, totals, states)
    engine.restore(probes, totals)
    rows = engine.table(probes).assign(model=config.model)
    side_tables = {name: side for probe in probes for name, side in probe.tables().items()}
    return ScanResult(rows, side_tables, {probe.name: probe.params.as_dict() for probe in probes})
