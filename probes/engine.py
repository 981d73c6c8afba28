"""The streaming probe engine: every selected probe's hooks in one forward pass per batch.

Each hook reduces its layer's activation on the spot and keeps nothing, so peak memory holds one
layer's attention pattern, never n_layers × T² of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from probes.base import Batch, GenerativeProbe, Probe, StreamingProbe
from probes.models import LoadedModel
from probes.prompts import PromptSuite

RESULT_COLUMNS = ["probe", "metric", "layer", "head", "position", "condition", "value"]


class PromptTooLongError(ValueError):
    """A prompt does not fit the model's context; the message names the prompt and the limit."""


@dataclass(frozen=True)
class TokenizedPrompt:
    id: str
    tokens: tuple[int, ...]


def tokenize_suite(
    model: LoadedModel, suite: PromptSuite, max_tokens: int | None
) -> list[TokenizedPrompt]:
    """Token ids per prompt (BOS first), truncated to `max_tokens`; errors name the prompt."""
    n_ctx = model.info.n_ctx
    if max_tokens is not None and not 2 <= max_tokens <= n_ctx:
        raise PromptTooLongError(
            f"max_tokens={max_tokens} is outside [2, {n_ctx}], the context of model "
            f"{model.info.name!r}"
        )
    tokenized = []
    for prompt in suite.prompts:
        ids = model.tokenize(prompt.text)
        if max_tokens is not None:
            ids = ids[:max_tokens]
        elif len(ids) > n_ctx:
            raise PromptTooLongError(
                f"prompt {prompt.id!r} of {suite.source} has {len(ids)} tokens, more than the "
                f"{n_ctx}-token context of model {model.info.name!r}; pass max_tokens to truncate"
            )
        tokenized.append(TokenizedPrompt(prompt.id, tuple(ids)))
    return tokenized


def batches(
    prompts: Sequence[TokenizedPrompt],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    keep_order: bool = False,
) -> Iterator[Batch]:
    """Right-padded batches of prompts of similar length (sorted, so little padding is wasted);
    `keep_order` batches them in the order given instead."""
    ordered = list(prompts) if keep_order else sorted(prompts, key=lambda p: len(p.tokens))
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(len(prompt.tokens) for prompt in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, prompt in enumerate(chunk):
            tokens[row, : len(prompt.tokens)] = torch.tensor(prompt.tokens)
        lengths = torch.tensor([len(prompt.tokens) for prompt in chunk])
        yield Batch(tokens.to(device), lengths.to(device), tuple(p.id for p in chunk))


@dataclass
class Pass:
    """Prompts run together, and the probes that read them."""

    prompts: list[TokenizedPrompt]
    keep_order: bool
    probes: list[Probe]


def plan_passes(
    model: LoadedModel, probes: Sequence[Probe], suite: PromptSuite, max_tokens: int | None
) -> list[Pass]:
    """One pass over the suite for the probes that read it, and one per distinct prompt list
    that probes supply themselves (`Probe.prompts`); probes supplying equal lists share it."""
    suite_readers: list[Probe] = []
    own: list[Pass] = []
    for probe in probes:
        if isinstance(probe, GenerativeProbe):
            continue  # it decodes on its own, after the passes
        supplied = probe.prompts(model, suite, max_tokens)
        if supplied is None:
            suite_readers.append(probe)
            continue
        supplied = list(supplied)
        for prompt in supplied:
            if not 1 <= len(prompt.tokens) <= model.info.n_ctx:
                raise PromptTooLongError(
                    f"probe {probe.name!r} made prompt {prompt.id!r} of {len(prompt.tokens)} "
                    f"tokens; model {model.info.name!r} takes 1 to {model.info.n_ctx}"
                )
        match = next((p for p in own if p.prompts == supplied), None)
        if match is None:
            own.append(Pass(supplied, keep_order=True, probes=[probe]))
        else:
            match.probes.append(probe)
    if suite_readers:
        own.insert(0, Pass(tokenize_suite(model, suite, max_tokens), False, suite_readers))
    return own


def forward(model: LoadedModel, batch: Batch, fwd_hooks: list) -> None:
    """One hooked forward pass under inference mode; nothing is returned or kept."""
    bridge = model.bridge
    with (
        torch.inference_mode(),
        bridge.hooks(fwd_hooks=fwd_hooks),
        patterns_released_after_each_layer(bridge),
    ):
        bridge(batch.tokens, attention_mask=batch.attention_mask, return_type=None)


PATHS = ("auto", "bridge", "fast")


def hooked_points(model: LoadedModel) -> list[str]:
    """Bridge hook points with forward hooks attached (interventions, planted patterns)."""
    return [name for name, point in model.bridge.hook_dict.items() if point._forward_hooks]


def choose_path(model: LoadedModel, probes: Sequence[Probe], path: str) -> str:
    """'fast' (probes/fastpath.py) when every probe is a StreamingProbe, the model's layers
    are reachable and no hooks are attached to the bridge; 'bridge' (TransformerLens hooks on
    whole patterns) otherwise."""
    from probes import fastpath

    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "bridge":
        return "bridge"
    outside = hooked_points(model)
    if outside:  # the fast path runs the unwrapped model: hooks set around the scan would not run
        if path == "fast":
            raise ValueError(
                f"the fast path bypasses the bridge, but hooks are attached to {outside[:3]} of "
                f"model {model.info.name!r}; use path='bridge' (or 'auto')"
            )
        return "bridge"
    if fastpath.supports(model, probes):
        return "fast"
    if path == "fast":
        others = [p.name for p in probes if not isinstance(p, StreamingProbe)]
        raise ValueError(
            f"the fast path cannot run probes {others or [p.name for p in probes]} on model "
            f"{model.info.name!r}; use path='bridge'"
        )
    return "bridge"


def run_batch(
    model: LoadedModel,
    batch: Batch,
    probes: Sequence[Probe],
    extra_hooks: Sequence = (),
    path: str = "bridge",
) -> None:
    """One batch through every probe: their hooks in one forward pass, then `end_batch`.

    `extra_hooks` run before the probes' hooks on the same hook point (tests plant patterns so);
    they need the bridge path.
    """
    if choose_path(model, probes, path) == "fast" and not extra_hooks:
        from probes import fastpath

        fastpath.run_batch(model, batch, probes)
        return
    fwd_hooks = list(extra_hooks) + [hook for probe in probes for hook in probe.hooks(batch)]
    forward(model, batch, fwd_hooks)
    for probe in probes:
        probe.end_batch(batch)


@contextmanager
def patterns_released_after_each_layer(bridge: torch.nn.Module) -> Iterator[None]:
    """Some bridge attention classes keep their last pattern on the module (`_pattern`, e.g.
    GPT-2's joint-QKV attention), which would keep every layer's T×T pattern alive. Drop it as
    soon as each attention module finishes."""

    def release(module: torch.nn.Module, inputs: object, output: object) -> None:
        module._pattern = None

    handles = [
        module.register_forward_hook(release)
        for module in bridge.modules()
        if hasattr(module, "_pattern")
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
        raise ValueError("no probes selected")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pad_id = model.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = model.tokenizer.eos_token_id or 0
    for probe in probes:
        probe.bind(model)
    passes = plan_passes(model, probes, suite, max_tokens)
    n_tokens = sum(len(prompt.tokens) for each in passes for prompt in each.prompts)
    with tqdm(
        total=n_tokens,
        unit="tok",
        desc=f"scan {model.info.name}",
        disable=not progress or not n_tokens,
    ) as bar:
        for each in passes:
            chosen = choose_path(model, each.probes, path)
            for batch in batches(each.prompts, batch_size, pad_id, model.device, each.keep_order):
                run_batch(model, batch, each.probes, path=chosen)
                bar.update(int(batch.lengths.sum()))
    for probe in probes:
        if isinstance(probe, GenerativeProbe):
            probe.generate(model, progress=progress)
    frames = [pd.DataFrame(probe.rows()).assign(probe=probe.name) for probe in probes]
    table = pd.concat(frames, ignore_index=True)
    for column in RESULT_COLUMNS:
        if column not in table:
            table[column] = None
    return table[RESULT_COLUMNS]
