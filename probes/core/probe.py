"""The probe protocol: Probe, StreamingProbe (pattern rows in query chunks), GenerativeProbe.

A probe declares the activations it needs and reduces them to per-head numbers while the forward
pass runs: each hook gets one layer's activation, folds it into running sums, and keeps nothing.

Totals: what a probe keeps between batches (running sums, per-prompt series) is named in
`totals`. The engine `take`s them after every batch (the batch's state, plain values) and folds
the states in batch order with `combine`, then `restore`s the fold before `rows`. Because every
scan folds per-batch states in the same order, a scan cut into shards (each computing some of
the batches, analyses.jobs.scan_work) gives the same numbers bit for bit as one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import torch

from probes.core import hook_names
from probes.core.errors import ConfigError
from probes.core.types import Batch, Hook, ModelInfo, ProbeParams

if TYPE_CHECKING:
    from probes.core.types import TokenizedPrompt
    from probes.inputs.prompts import PromptSuite
    from probes.models import LoadedModel

P = TypeVar("P", bound=ProbeParams)
T = TypeVar("T")
State = dict[str, Any]  # a probe's totals over some batches: tensors, numbers, str, lists, dicts
Combine = Literal["sum", "list", "dict"]


def totals_of(**how: Combine) -> Mapping[str, Combine]:
    """A probe class's `totals`: attribute=how its values over two runs of batches combine."""
    return MappingProxyType(how)


class Probe(ABC, Generic[P]):
    """One probe family. Subclasses set `name`, `Params`, and implement `hooks` and `rows`.

    Generic in its parameter class: `class SinkProbe(StreamingProbe[SinkParams])` with
    `Params = SinkParams` makes `self.params` a `SinkParams`.
    """

    name: ClassVar[str]
    Params: type[P]  # set once per class (a ClassVar cannot be generic)
    description: ClassVar[str] = ""
    # What the probe keeps between batches, by attribute, and how two batches' values combine:
    # "sum" (a tensor or number), "list" (in order), "dict" (disjoint keys, in order).
    totals: ClassVar[Mapping[str, Combine]] = totals_of()

    def __init__(self, info: ModelInfo, params: P | None = None) -> None:
        self.info = info
        self.params: P = params if params is not None else self.Params()
        self._claimed = False

    def claim(self) -> None:
        """Called by the engine as a run starts: a probe's running sums belong to one run, so a
        probe object used before is refused rather than mixing two runs' numbers."""
        if self._claimed:
            raise ConfigError(
                f"probe {self.name!r} was already used for a run; its sums would mix both runs. "
                "Make a new probe object for each run"
            )
        self._claimed = True

    def bind(self, model: LoadedModel) -> None:
        """Called by the engine once, before the first batch. Probes that need more of the model
        than `info` (e.g. its tokenizer, to store token text) override this; default: nothing."""
        return None

    def prompts(
        self, model: LoadedModel, suite: PromptSuite, max_tokens: int | None
    ) -> list[TokenizedPrompt] | None:
        """Token sequences this probe reads instead of the scan's suite; None (default) = the suite.

        Override when a probe needs inputs of its own (repeated random tokens; each prompt with
        and without a context segment). The engine runs them in a pass of their own, batched in
        the order returned, so variants meant to be compared can share a batch. Called once,
        after `bind`.
        """
        return None

    @abstractmethod
    def hooks(self, batch: Batch) -> list[Hook]:
        """Forward hooks that fold this batch's activations into the probe's running state."""

    def end_batch(self, batch: Batch) -> None:
        """Called by the engine after each batch's forward pass, on every path."""

    def tables(self) -> dict[str, Any]:
        """Side tables (name -> DataFrame, names from probes.core.schema) stored beside the
        rows, e.g. per-sample outcomes or the prompts' tokens; default: none."""
        return {}

    @abstractmethod
    def rows(self) -> list[dict[str, Any]]:
        """Finished results: dicts with metric, layer, head, value[, position, condition]."""

    def take(self) -> State:
        """The totals gathered since the last `take` (the state of the batches in between),
        reset to empty. Values are plain (tensors, numbers, text, lists, dicts) so that a state
        can be stored and loaded without unpickling code."""
        state = {name: getattr(self, name) for name in self.totals}
        for name, how in self.totals.items():
            setattr(self, name, _empty(state[name], how))
        return state

    def combine(self, earlier: State, later: State) -> State:
        """The state of `earlier`'s batches followed by `later`'s."""
        combined: State = {}
        for name, how in self.totals.items():
            first, second = earlier[name], later[name]
            if how == "sum":
                combined[name] = first + second
            elif how == "list":
                combined[name] = [*first, *second]
            else:
                twice = [key for key in second if key in first]
                if twice:
                    raise ValueError(f"probe {self.name!r}: {name} {twice[0]!r} seen twice")
                combined[name] = {**first, **second}
        return combined

    def restore(self, state: State) -> None:
        """Set the totals to `state` (a fold of taken states), e.g. before `rows`."""
        for name in self.totals:
            setattr(self, name, state[name])


def _empty(value: Any, how: Combine) -> Any:
    if how == "list":
        return []
    if how == "dict":
        return {}
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    return type(value)(0)


class StreamingProbe(Probe[P]):
    """A probe whose reductions read only attention-pattern rows and the residual stream entering
    each layer, and add up over query chunks. Such probes run on either engine path: bridge hooks
    (whole patterns), or the fast path (probes/engine/fast.py), which computes pattern rows in query
    chunks from the layer's queries and keys while the model's own attention runs a fast kernel.
    """

    # ⊆ {"pattern", "resid_pre", "row_entropy"}; with "row_entropy" the fast path also hands
    # `on_pattern` each row's entropy as `entropy=` (computed from the scores, cheaper than from
    # the rows), and the bridge path does not (the probe takes it from the rows).
    reads: ClassVar[frozenset[str]] = frozenset({"pattern"})

    def start_batch(self, batch: Batch) -> None:
        """Called once per batch before its forward pass, on every path."""

    def _batch_state(self, state: T | None) -> T:
        """Per-batch state that `start_batch` set (None outside a batch, which is an error)."""
        if state is None:
            raise RuntimeError(f"probe {self.name!r} was called outside a batch (no start_batch)")
        return state

    def on_pattern(
        self, layer: int, rows: torch.Tensor, q_start: int, batch: Batch, k_start: int = 0
    ) -> None:  # pragma: no cover - subclasses that read patterns override
        """Fold pattern rows [batch, head, q_chunk, k] (queries q_start…) into the state.

        The rows cover keys k_start…k_start + k − 1 of the batch's width: the fast path leaves out
        the keys no query of the chunk can see, whose attention is exactly zero (those past the
        chunk under the causal mask, and those before a sliding-window layer's window). A probe
        whose override takes no `k_start` is given rows from key 0 (zeros before the band).
        The rows live in a buffer the next chunk overwrites: copy what outlives the call.
        """
        raise NotImplementedError

    def on_resid_pre(
        self, layer: int, resid: torch.Tensor, batch: Batch
    ) -> None:  # pragma: no cover - subclasses that read the residual stream override
        """Fold the residual stream entering `layer`, [batch, pos, d_model], into the state."""
        raise NotImplementedError

    def hooks(self, batch: Batch) -> list[Hook]:
        """The bridge path: whole patterns arrive as one chunk starting at query 0."""
        self.start_batch(batch)
        result: list[Hook] = []
        for layer in range(self.info.n_layers):
            if "pattern" in self.reads:
                name = hook_names.attn(layer, "pattern")
                result.append((name, self._pattern_hook(layer, batch)))
            if "resid_pre" in self.reads:
                name = hook_names.block(layer, "resid_pre")
                result.append((name, self._resid_hook(layer, batch)))
        return result

    def _pattern_hook(self, layer: int, batch: Batch) -> Callable[..., None]:
        return lambda pattern, hook: self.on_pattern(layer, pattern, 0, batch)

    def _resid_hook(self, layer: int, batch: Batch) -> Callable[..., None]:
        return lambda resid, hook: self.on_resid_pre(layer, resid, batch)


class GenerativeProbe(Probe[P]):
    """A probe that generates instead of reading one forward pass (e.g. greedy decoding on
    needle-in-a-haystack prompts). The engine skips it in its passes and calls `generate` once;
    `tables` may return extra per-run tables (name -> DataFrame) that the scan stores beside the
    tidy rows."""

    def hooks(self, batch: Batch) -> list[Hook]:
        return []

    @abstractmethod
    def generate(self, model: LoadedModel, *, progress: bool = True) -> None:
        """Run the probe's own prompts through `model`, folding the results into its state."""
