"""Greedy decoding through the bridge with a KV cache, the way the retrieval-head authors decode.

The prompt minus its last token is prefilled; decoding then feeds the last prompt token first, so
cache position p holds prompt token p and every decoding step has exactly one query per row
(nightdessert/Retrieval_Head, `evaluate_and_log` → `decode`). Hooks given to `greedy_decode` see
only those one-query steps; the prefill runs with its own hooks (none by default).

`generate` is free greedy generation (a text or image prompt, optional hooks such as VHR's head
scaling on every pass): the divergence probe's generated answers and `hl.generate` use it.

`decode_niah` is the one needle-in-a-haystack loop (the retrieval probe, the NIAH sweep task and
retrieval-head masking all use it): prefill a sample, greedy-decode one or more rows (intervened
copies, one per row), and score each answer by ROUGE-1 recall of the needle's answer; a sample
counts as answered when that recall exceeds a threshold (`answered`, the authors' rule).

ROUGE-1 recall is computed here, without the `rouge_score` package: both lower-case the text and
split it into [a-z0-9]+ tokens, but `rouge_score(use_stemmer=True)`, which the authors use, also
Porter-stems tokens longer than 3 characters. Stemming only merges tokens, so recall here is never
above theirs ("walks" does not match "walk" here).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from probes import bridge
from probes.core.types import Hook
from probes.models import LoadedModel, decode_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from probes.inputs.niah import NiahSample

OnStep = Callable[[int, torch.Tensor], None]
HooksFor = Callable[[list[int]], Sequence[Hook]]
_WORD = re.compile(r"[a-z0-9]+")


class StopRule:
    """A row stops after a special token (EOS, end of turn, …) or a token whose text holds a
    newline (the authors stop at '<0x0A>'). The stopping token is kept, and scored."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.special = frozenset(tokenizer.all_special_ids)
        self._newline: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        if token in self.special:
            return True
        if token not in self._newline:
            self._newline[token] = "\n" in decode_text(self.tokenizer, [token])
        return self._newline[token]


def prefill(
    model: LoadedModel, tokens: Sequence[int], fwd_hooks: Sequence[Hook] = (), **inputs: Any
) -> Any:
    """The Hugging Face KV cache after all but the last of `tokens` (hooked only by `fwd_hooks`);
    `inputs` go to this forward pass only (an image prompt's `pixel_values`: the image tokens
    are all in the prefill, and the HF model reads pixels only where its input has them)."""
    if len(tokens) < 2:
        raise ValueError(f"a prompt to decode from needs at least 2 tokens, got {len(tokens)}")
    ids = torch.tensor([list(tokens[:-1])], device=model.device)
    extra: dict[str, Any] = bridge.last_logits_only(model)  # kwargs for the HF model's forward
    # Inputs given per token of the prompt (Qwen2.5-VL's mm_token_type_ids) cover the prefill.
    inputs = {
        name: value[:, :-1] if _per_token(value, len(tokens)) else value
        for name, value in inputs.items()
    }
    _, cache = bridge.forward(
        model, ids, fwd_hooks, return_type="logits_and_cache", **extra, **inputs
    )
    return cache


def _per_token(value: Any, n_tokens: int) -> bool:
    """Whether a forward input is [1, position] over the prompt's `n_tokens` (pixels, grids and
    other image inputs are not: no image prompt is as short as its 3 grid numbers)."""
    return isinstance(value, torch.Tensor) and tuple(value.shape) == (1, n_tokens)


def greedy_decode(
    model: LoadedModel,
    cache: Any,
    last_token: int,
    *,
    max_new_tokens: int,
    stop: Callable[[int], bool],
    fwd_hooks: Sequence[Hook] | HooksFor = (),
    n_rows: int = 1,
    on_step: OnStep | None = None,
    on_logits: OnStep | None = None,
) -> list[list[int]]:
    """Greedy tokens per row, each ending at its first stop token (or after `max_new_tokens`).

    `cache` (from `prefill`) is extended in place, and repeated to `n_rows` identical rows first.
    `fwd_hooks` is a hook list, or a function of the rows in the batch (indices into the n_rows)
    returning their hooks, e.g. `interventions.stacked_hooks` over those rows' copies. Given a
    function, a row that stops leaves the batch and the cache (the function is called again), so
    the cost follows each row's own length; a plain list keeps every row to the end, since its
    hooks may depend on the batch layout. `on_step(step, tokens)` sees each step's greedy tokens
    of the rows in the batch, right after the step's forward pass; `on_logits(step, logits)`
    their last-position logits [rows, vocab].
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    droppable = callable(fwd_hooks)
    hooks_for = fwd_hooks if callable(fwd_hooks) else (lambda rows: fwd_hooks)
    if n_rows > 1:
        cache.batch_repeat_interleave(n_rows)
    inputs = torch.full((n_rows, 1), last_token, dtype=torch.long, device=model.device)
    generated: list[list[int]] = [[] for _ in range(n_rows)]
    in_batch = list(range(n_rows))
    running = set(in_batch)
    step = 0
    while running and step < max_new_tokens:
        with bridge.hooked(model, hooks_for(in_batch)) as hooked_bridge:
            while running and step < max_new_tokens:
                logits, cache = hooked_bridge(
                    inputs, return_type="logits_and_cache", past_key_values=cache
                )
                tokens = logits[:, -1].argmax(-1)
                if on_logits is not None:
                    on_logits(step, logits[:, -1])
                if on_step is not None:
                    on_step(step, tokens)
                step += 1
                for row, token in zip(in_batch, tokens.tolist(), strict=True):
                    if row in running:
                        generated[row].append(token)
                        if stop(token):
                            running.discard(row)
                inputs = tokens[:, None]
                if droppable and len(running) < len(in_batch):
                    keep = [i for i, row in enumerate(in_batch) if row in running]
                    in_batch = [in_batch[i] for i in keep]
                    inputs = inputs[keep]
                    if keep:
                        cache.batch_select_indices(torch.tensor(keep, device=inputs.device))
                    break  # new hooks for the rows that remain
    return generated


# --- free generation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """A greedy continuation of one prompt."""

    prompt: tuple[int, ...]  # the prompt's token ids (an image prompt's image tokens included)
    tokens: tuple[int, ...]  # the generated ids, the stopping token (EOS) included
    text: str  # their text, special tokens skipped
    logits: torch.Tensor | None = None  # [generated, vocab] float32, when asked for

    @property
    def sequence(self) -> tuple[int, ...]:
        return self.prompt + self.tokens


def eos_ids(model: LoadedModel) -> frozenset[int]:
    """The ids `generate` stops at: the tokenizer's EOS and the model's generation config's, as
    Hugging Face `generate` stops."""
    ids = {model.tokenizer.eos_token_id}
    config = getattr(bridge.hf_model(model), "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(int(i) for i in ids if i is not None)


def generate(
    model: LoadedModel,
    tokens: Sequence[int],
    *,
    image_inputs: Mapping[str, torch.Tensor] | None = None,
    max_new_tokens: int = 16,
    stop: Callable[[int], bool] | None = None,
    fwd_hooks: Sequence[Hook] = (),
    keep_logits: bool = False,
) -> Generation:
    """Greedy generation from `tokens` (BOS included), stopping after EOS (`stop`: any other
    rule) or `max_new_tokens`: the tokens Hugging Face `generate(do_sample=False)` gives.

    An image prompt's `tokens` hold its image tokens and `image_inputs` its pixels and what
    else the architecture reads with them (`probes.inputs.images.prompt_image_inputs`), which
    go to the prefill only: every image token is
    there, and decoding steps read the image through the KV cache. `fwd_hooks` (interventions,
    e.g. VHR's head scaling) act on the prefill and on every decoding step alike.
    """
    ends = eos_ids(model)
    cache = prefill(model, tokens, fwd_hooks, **(image_inputs or {}))
    steps: list[torch.Tensor] = []

    def keep(_: int, logits: torch.Tensor) -> None:
        steps.append(logits[0].float().cpu())

    (generated,) = greedy_decode(
        model,
        cache,
        tokens[-1],
        max_new_tokens=max_new_tokens,
        stop=stop or ends.__contains__,
        fwd_hooks=fwd_hooks,
        on_logits=keep if keep_logits else None,
    )
    text = decode_text(model.tokenizer, generated, skip_special_tokens=True)
    return Generation(
        tuple(tokens), tuple(generated), text, torch.stack(steps) if keep_logits else None
    )


# --- needle-in-a-haystack answers ---------------------------------------------------------------


def rouge1_recall(reference: str, response: str) -> float:
    """Unigram recall of `reference` in `response` (clipped counts), rouge_score's tokenisation
    without stemming; 0 when the reference has no tokens."""
    wanted = Counter(_WORD.findall(reference.lower()))
    if not wanted:
        return 0.0
    found = Counter(_WORD.findall(response.lower()))
    return sum((wanted & found).values()) / sum(wanted.values())


def answered(recall: float, threshold: float) -> bool:
    """Whether a NIAH answer counts as correct: ROUGE-1 recall above `threshold` (the authors'
    rule, with threshold 0.5)."""
    return recall > threshold


@dataclass(frozen=True)
class NiahAnswer:
    """One decoded row of a NIAH sample and its score."""

    generated: tuple[int, ...]  # greedy tokens, the stopping token included
    response: str  # their text without special tokens, stripped
    recall: float  # ROUGE-1 recall of the needle's answer in `response`


def decode_niah(
    model: LoadedModel,
    sample: NiahSample,
    *,
    max_new_tokens: int,
    stop: Callable[[int], bool],
    fwd_hooks: Sequence[Hook] | HooksFor = (),
    n_rows: int = 1,
    rows_per_batch: int | None = None,
    prefill_hooks: Sequence[Hook] = (),
    cache: Any = None,
    on_step: OnStep | None = None,
) -> list[NiahAnswer]:
    """Greedy answers to `sample`, one per row, each scored against the needle's answer.

    The prompt but its last token is prefilled once (with `prefill_hooks`), unless `cache` gives
    that prefill already; it is extended in place, so pass a copy to keep one. The `n_rows` rows
    then decode from it as in `greedy_decode`, with `fwd_hooks` a hook list or a function of the
    rows in the batch. With `rows_per_batch` (< n_rows, `fwd_hooks` a function of the rows) they
    decode in batches of that many rows, each from its own copy of the cache; the function still
    sees indices into all n_rows. `on_step` sees each batch's steps (see `greedy_decode`).
    """
    per_batch = n_rows if rows_per_batch is None else rows_per_batch
    if per_batch < 1:
        raise ValueError(f"rows_per_batch must be at least 1, got {rows_per_batch}")
    if per_batch < n_rows and not callable(fwd_hooks):
        raise ValueError(
            "rows can decode in several batches only when fwd_hooks is a function of the rows"
        )
    if cache is None:
        cache = prefill(model, sample.tokens, prefill_hooks)
    elif prefill_hooks:
        raise ValueError("prefill_hooks act only on a prefill made here; `cache` is one already")
    generated: list[list[int]] = []
    for start in range(0, n_rows, per_batch):
        size = min(per_batch, n_rows - start)
        hooks = _rows_from(fwd_hooks, start) if callable(fwd_hooks) else fwd_hooks
        generated += greedy_decode(
            model,
            cache if start + size >= n_rows else copy.deepcopy(cache),
            sample.tokens[-1],
            max_new_tokens=max_new_tokens,
            stop=stop,
            fwd_hooks=hooks,
            n_rows=size,
            on_step=on_step,
        )
    answers = []
    for tokens in generated:
        response = decode_text(model.tokenizer, tokens, skip_special_tokens=True).strip()
        answers.append(
            NiahAnswer(tuple(tokens), response, rouge1_recall(sample.needle.answer, response))
        )
    return answers


def _rows_from(hooks_for: HooksFor, start: int) -> HooksFor:
    """`hooks_for` for a batch whose row i is row start + i of all the rows."""
    return lambda rows: hooks_for([start + row for row in rows])
