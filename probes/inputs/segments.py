"""Prompts with and without a context segment (marked text, or an image)."""

from __future__ import annotations

from dataclasses import dataclass

from probes.inputs.prompts import PromptFileError


class SegmentError(PromptFileError):
    """A prompt's context segment is malformed or leaves no answer; names the prompt."""


@dataclass(frozen=True)
class Layout:
    """One prompt's two variants and where their answer tokens are. A generated answer's
    variants end with its tokens but the last (`generated`, all of them): the head outputs at
    the last `n_answer` positions are the ones that produced each generated token."""

    prompt_id: str
    with_segment: tuple[int, ...]
    without_segment: tuple[int, ...]
    n_answer: int
    generated: tuple[int, ...] = ()

    def answer_start(self, variant: str) -> int:
        tokens = self.with_segment if variant == "with" else self.without_segment
        return len(tokens) - self.n_answer


def split_segment(text: str, open_marker: str, close_marker: str, where: str) -> tuple[str, ...]:
    """(before, segment, after) of a marked prompt, or (text,) if it has no markers."""
    n_open, n_close = text.count(open_marker), text.count(close_marker)
    if n_open == n_close == 0:
        return (text,)
    if n_open != 1 or n_close != 1 or text.index(open_marker) > text.index(close_marker):
        raise SegmentError(
            f"{where}: expected one {open_marker}…{close_marker} span, found {n_open} opening "
            f"and {n_close} closing markers"
        )
    before, rest = text.split(open_marker)
    segment, after = rest.split(close_marker)
    return before, segment, after
