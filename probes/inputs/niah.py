"""Needle-in-a-haystack prompts: a fact hidden at a chosen depth of real text, then a question.

After Wu et al. 2024 (nightdessert/Retrieval_Head, `generate_context`, `insert_needle`,
`evaluate_and_log`): the haystack is cut to the context length, the needle sentence goes in at
`depth` percent of the haystack's tokens, moved back to the previous sentence end, and the prompt
is the authors' "<book>{context}</book> ... Question: {question}\\nAnswer:", through the chat
template for instruct models. Where this module differs, and why:

- `length` is the whole prompt in tokens (template, question and BOS included), so a grid cell
  means the same thing on every model; the authors subtract a fixed 200-token buffer instead.
  Re-tokenising joined text can shift the count by a token or two; samples record the true length.
- The answer's token span is exact: the prompt is tokenised once with character offsets and the
  span is every token overlapping the answer's characters. The authors tokenise the answer on its
  own and take the first window whose token *set* overlaps it by > 90 % (`find_needle_idx`);
  with byte-level BPE the answer's first word tokenises without its leading space there, so
  that match can miss. On SentencePiece tokenizers both give the same span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.core.errors import ConfigError
from probes.core.types import ValidatedParams
from probes.inputs.prompts import (
    PromptFileError,
    jsonl_objects,
    load_jsonl,
    read_text_file,
    stdlib_docs_text,
)
from probes.models import LoadedModel

DEFAULT_NEEDLES = Path(__file__).resolve().parents[2] / "data" / "prompts" / "needles.jsonl"
STDLIB_DOCS = "stdlib-docs"
# The authors' prompt (evaluate_and_log, chat branch); used for base models too.
DEFAULT_TEMPLATE = (
    "<book>{context}</book>\nBased on the content of the book, Question: {question}\nAnswer:"
)
_NEEDLE_KEYS = {"id", "needle", "question", "answer", "real_needle"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class NiahError(ConfigError):
    """A needle-in-a-haystack setting cannot be built; the message names the parameter."""


@dataclass(frozen=True)
class Needle:
    id: str
    needle: str  # the sentence hidden in the haystack
    question: str
    answer: str  # the span of `needle` the model must retrieve (the authors' `real_needle`)

    @property
    def answer_offset(self) -> int:
        return self.needle.lower().index(self.answer.lower())


@dataclass(frozen=True)
class NiahSample:
    id: str
    needle: Needle
    length: int  # the grid's nominal prompt length in tokens
    depth: int  # percent of the haystack before the needle
    tokens: tuple[int, ...]  # the whole prompt, BOS first
    answer_span: tuple[int, int]  # [start, end) token positions of the answer in `tokens`


def load_needles(path: Path | str) -> tuple[Needle, ...]:
    """Needles from JSONL: {"id", "needle", "question", "answer"} per line ("real_needle", the
    authors' name, is accepted for "answer"). The answer must occur in the needle sentence."""
    path = Path(path)
    needles: list[Needle] = []
    for where, number, record in jsonl_objects(path, "needle file"):
        unknown = set(record) - _NEEDLE_KEYS
        if unknown:
            raise PromptFileError(f"{where}: unknown keys {sorted(unknown)}; use {_NEEDLE_KEYS}")
        if "answer" not in record and "real_needle" in record:
            record["answer"] = record["real_needle"]
        for key in ("needle", "question", "answer"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise PromptFileError(f'{where}: "{key}" must be a non-empty string')
        needle = Needle(
            id=str(record.get("id", f"line-{number}")),
            needle=record["needle"].strip(),
            question=record["question"].strip(),
            answer=record["answer"].strip(),
        )
        if needle.answer.lower() not in needle.needle.lower():
            raise PromptFileError(f"{where}: the answer {needle.answer!r} is not in the needle")
        needles.append(needle)
    if not needles:
        raise PromptFileError(f"needle file {path} holds no needles")
    ids = [needle.id for needle in needles]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise PromptFileError(f"needle file {path}: the id {duplicate!r} appears more than once")
    return tuple(needles)


def load_haystack(source: str) -> str:
    """Haystack text: "stdlib-docs" (prose from the standard library's docstrings), a UTF-8 text
    file, or a prompt JSONL file whose texts are joined in order."""
    if source == STDLIB_DOCS:
        return "\n".join(stdlib_docs_text())
    path = Path(source)
    if path.suffix == ".jsonl":
        return "\n".join(prompt.text for prompt in load_jsonl(path).prompts)
    if not path.exists():
        raise PromptFileError(
            f"haystack {source!r} is neither {STDLIB_DOCS!r} nor an existing file"
        )
    text = read_text_file(path, "haystack file")
    if not text.strip():
        raise PromptFileError(f"haystack file {path} is empty")
    return text


def insertion_point(text: str, position: int) -> int:
    """The last sentence start at or before character `position` (0 if there is none)."""
    starts = [match.end() for match in _SENTENCE_END.finditer(text, 0, position)]
    return starts[-1] if starts else 0


class NiahBuilder:
    """Builds needle-in-a-haystack prompts for one model (its tokenizer and chat template)."""

    def __init__(self, model: LoadedModel, haystack: str, template: str = DEFAULT_TEMPLATE) -> None:
        try:
            filled = template.format(context="\0", question="\1")
        except (KeyError, IndexError, ValueError) as error:
            raise NiahError(f"the prompt template {template!r} cannot be filled: {error}") from None
        if "\0" not in filled or "\1" not in filled:
            raise NiahError(f"the prompt template needs {{context}} and {{question}}: {template!r}")
        self.model = model
        self.template = template
        self.haystack = haystack
        encoded = model.tokenizer(haystack, add_special_tokens=False, return_offsets_mapping=True)
        self._hay_offsets = [tuple(pair) for pair in encoded["offset_mapping"]]

    def render(self, context: str, question: str) -> str:
        """The prompt text; instruct models get their chat template with a generation prompt."""
        content = self.template.format(context=context, question=question)
        if not self.model.chat:
            return content
        messages = [{"role": "user", "content": content}]
        text = self.model.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):  # typed for every return_* option; tokenize=False is text
            raise NiahError(f"the chat template gave {type(text).__name__}, not the prompt text")
        return text

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of `text`. BOS is explicit: prepended unless the text
        (a chat template) already begins with it, never added by tokenizer defaults."""
        encoded = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
        bos = self.model.info.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids, offsets = [bos, *ids], [(0, 0), *offsets]
        return ids, offsets

    def sample(self, needle: Needle, length: int, depth: int) -> NiahSample:
        """`needle` at `depth` percent of a haystack cut so that the prompt has `length` tokens
        (or the nearest count below it that re-tokenisation allows)."""
        if not 0 <= depth <= 100:
            raise NiahError(f"depth must lie in [0, 100] percent, got {depth}")
        overhead = len(self.encode(self.render(needle.needle, needle.question))[0])
        budget = length - overhead
        if budget < 1:
            raise NiahError(
                f"context length {length} leaves no room for a haystack: the template, question "
                f"and needle {needle.id!r} already take {overhead} tokens of model "
                f"{self.model.info.name!r}"
            )
        best = None
        for _ in range(4):  # joining text re-tokenises a little differently; correct the cut
            ids, span = self._build(needle, budget, depth)
            if len(ids) <= length and (best is None or len(ids) > len(best[0])):
                best = (ids, span)
            budget += length - len(ids)
            if len(ids) == length or budget < 1:
                break
        if best is None:
            raise NiahError(f"no haystack cut gives a prompt of at most {length} tokens")
        ids, span = best
        return NiahSample(
            id=f"{needle.id}@len={length},depth={depth}",
            needle=needle,
            length=length,
            depth=depth,
            tokens=tuple(ids),
            answer_span=span,
        )

    def _build(self, needle: Needle, budget: int, depth: int) -> tuple[list[int], tuple[int, int]]:
        """Prompt ids and answer span with `budget` haystack tokens and the needle at `depth`."""
        if budget > len(self._hay_offsets):
            raise NiahError(
                f"the prompt needs {budget} haystack tokens; the haystack has only "
                f"{len(self._hay_offsets)} with model {self.model.info.name!r} (give a longer text "
                f"file as --param retrieval.haystack=FILE, or a shorter length)"
            )
        chunk = self.haystack[: self._hay_offsets[budget - 1][1]].rstrip()
        if depth == 100:
            at = len(chunk)
        else:
            at = insertion_point(chunk, self._hay_offsets[budget * depth // 100][0])
        before, after = chunk[:at].rstrip(), chunk[at:].lstrip()
        context = " ".join(part for part in (before, needle.needle, after) if part)
        needle_at = len(before) + 1 if before else 0
        text = self.render(context, needle.question)
        context_at = text.find(context)
        if context_at < 0:
            raise NiahError(f"the chat template of {self.model.info.name!r} altered the context")
        ids, offsets = self.encode(text)
        start = context_at + needle_at + needle.answer_offset
        return ids, token_span(offsets, start, start + len(needle.answer))


def token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens whose characters overlap [start, end)."""
    inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not inside:
        raise NiahError(f"no token covers characters [{start}, {end}) of the prompt")
    return inside[0], inside[-1] + 1


def grid(
    builder: NiahBuilder,
    needles: Sequence[Needle],
    lengths: Sequence[int],
    depths: Sequence[int],
    needles_per_cell: int = 1,
) -> list[NiahSample]:
    """One sample per (length, depth, needle); cell c takes needles c·k … c·k + k − 1 (mod n),
    so with k = needles_per_cell < n the needles rotate through the grid."""
    if not 1 <= needles_per_cell <= len(needles):
        raise NiahError(
            f"needles_per_cell must lie in [1, {len(needles)}] (the number of needles), "
            f"got {needles_per_cell}"
        )
    samples = []
    cells = [(length, depth) for length in lengths for depth in depths]
    for cell, (length, depth) in enumerate(cells):
        for j in range(needles_per_cell):
            needle = needles[(cell * needles_per_cell + j) % len(needles)]
            samples.append(builder.sample(needle, length, depth))
    return samples


def check_grid(params: ValidatedParams) -> None:
    """Range checks of a NIAH grid's parameters (lengths, depths, needles_per_cell,
    max_new_tokens, recall_threshold), shared by the retrieval probe and the NIAH sweep task."""
    grid: Any = params
    params.require(bool(grid.lengths) and min(grid.lengths) >= 2, "lengths", "≥ 2 tokens each")
    params.require(
        bool(grid.depths) and all(0 <= d <= 100 for d in grid.depths), "depths", "in [0, 100]"
    )
    params.require(grid.needles_per_cell >= 1, "needles_per_cell", "at least 1")
    params.require(grid.max_new_tokens >= 1, "max_new_tokens", "at least 1")
    params.require(0 <= grid.recall_threshold < 1, "recall_threshold", "in [0, 1)")
