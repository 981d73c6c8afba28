"""Pass planning: which prompts run together, tokenized, truncated and right-padded into batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from probes.core.errors import ConfigError, PromptTooLongError
from probes.core.probe import GenerativeProbe, Probe
from probes.core.types import Batch, TokenizedPrompt
from probes.inputs.images import tokenize_image_prompt
from probes.inputs.prompts import PromptSuite
from probes.models import LoadedModel


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
    if not suite.prompts:
        raise ConfigError(f"prompt suite {suite.name!r} ({suite.source}) holds no prompts")
    tokenized = []
    for prompt in suite.prompts:
        if prompt.image is not None:
            where = f"prompt {prompt.id!r} of {suite.source}"
            tokenized.append(tokenize_image_prompt(model, prompt, max_tokens, where))
            continue
        limit = max_tokens if max_tokens is not None else n_ctx
        ids, whole = tokenize_prefix(model, prompt.text, limit)
        if max_tokens is not None:
            ids = ids[:max_tokens]
        elif len(ids) > n_ctx:
            count = f"{len(ids)}" if whole else f"more than {n_ctx}"
            raise PromptTooLongError(
                f"prompt {prompt.id!r} of {suite.source} has {count} tokens, more than the "
                f"{n_ctx}-token context of model {model.info.name!r}; pass max_tokens to truncate"
            )
        tokenized.append(TokenizedPrompt(prompt.id, tuple(ids)))
    return tokenized


# Tokens past the ones kept that a cut text must still yield, so that the cut (which can split
# a word) lies well beyond the last kept token.
CUT_MARGIN = 32


def tokenize_prefix(model: LoadedModel, text: str, limit: int) -> tuple[list[int], bool]:
    """Token ids (BOS first) of as much of `text` as it takes to know its first `limit` tokens:
    a prefix of about 8 characters a token, doubled until it yields `limit` + CUT_MARGIN tokens
    or is the whole text. A 20 MB prompt cut to 64 tokens is never tokenized whole. Returns the
    ids and whether they are the whole text's."""
    chars = 8 * (limit + CUT_MARGIN)
    while True:
        whole = chars >= len(text)
        ids = model.tokenize(text if whole else text[:chars])
        if whole:
            return ids, True
        if len(ids) > limit + CUT_MARGIN:
            return ids[: limit + 1], False
        chars *= 2


def batches(
    prompts: Sequence[TokenizedPrompt],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    keep_order: bool = False,
    select: range | None = None,
) -> Iterator[Batch]:
    """Right-padded batches of prompts of similar length (sorted, so little padding is wasted);
    `keep_order` batches them in the order given instead; `select` keeps only the batches with
    those numbers (a shard's: probes.core.shards)."""
    ordered = list(prompts) if keep_order else sorted(prompts, key=lambda p: len(p.tokens))
    for number, start in enumerate(range(0, len(ordered), batch_size)):
        if select is not None and number not in select:
            continue
        chunk = ordered[start : start + batch_size]
        width = max(len(prompt.tokens) for prompt in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, prompt in enumerate(chunk):
            tokens[row, : len(prompt.tokens)] = torch.tensor(prompt.tokens)
        lengths = torch.tensor([len(prompt.tokens) for prompt in chunk])
        images = tuple(p.image for p in chunk) if any(p.image for p in chunk) else ()
        yield Batch(tokens.to(device), lengths.to(device), tuple(p.id for p in chunk), images)


@dataclass
class Pass:
    """Prompts run together, and the probes that read them."""

    prompts: list[TokenizedPrompt]
    keep_order: bool
    probes: list[Probe]
    of_suite: bool = False  # the scan's own prompts (not ones a probe made)


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
        tokenized = tokenize_suite(model, suite, max_tokens)
        own.insert(0, Pass(tokenized, False, suite_readers, of_suite=True))
    return own
