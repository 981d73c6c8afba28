"""Indirect-object-identification (IOI) style prompt pairs, written for headlab.

"When Mary and John went to the store, John gave a drink to" → " Mary" (the indirect object)
rather than " John" (the repeated subject). Each item carries the prompt, the correct and the
incorrect answer; the task metric is logit(correct) − logit(incorrect) at the last token.
Templates come in both name orders (ABBA and BABA). Any JSONL file of
{"id", "text", "correct", "incorrect"} objects can replace them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from probes.inputs.prompts import PromptFileError, jsonl_objects

# Names and words chosen to be one token (with the leading space) in SmolLM2's and Llama-style
# tokenizers; the task checks the answers' first tokens differ on the model actually used.
NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Lisa", "Michael", "Anna",
    "Paul", "Kate", "Sarah", "David", "Mark", "Alice", "Bob", "Emma", "Jack", "Laura", "Peter",
)  # fmt: skip
PLACES = ("store", "park", "school", "garden", "house", "office", "station", "restaurant")
OBJECTS = ("drink", "book", "ball", "letter", "bag", "key", "gift", "pen")
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "After {A} and {B} went to the {place}, {S} handed a {object} to",
    "Then, {A} and {B} had a long argument at the {place}. Afterwards {S} said to",
    "{A} and {B} went to the {place} together. {S} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
)


@dataclass(frozen=True)
class PromptPair:
    id: str
    text: str
    correct: str  # the answer, with its leading space
    incorrect: str


def ioi_pairs(n: int = 32, seed: int = 0) -> tuple[PromptPair, ...]:
    """`n` IOI prompts, cycling through templates and both name orders, deterministic in seed."""
    if n < 1:
        raise ValueError(f"ioi_pairs needs n >= 1, got {n}")
    rng = random.Random(seed)
    pairs = []
    for index in range(n):
        template = TEMPLATES[index % len(TEMPLATES)]
        indirect, subject = rng.sample(NAMES, 2)
        first, second = (
            (indirect, subject) if (index // len(TEMPLATES)) % 2 else (subject, indirect)
        )
        text = template.format(
            A=first, B=second, S=subject, place=rng.choice(PLACES), object=rng.choice(OBJECTS)
        )
        pairs.append(PromptPair(f"ioi-{index:03d}", text, f" {indirect}", f" {subject}"))
    return tuple(pairs)


def load_pairs(path: Path | str) -> tuple[PromptPair, ...]:
    """Prompt pairs from a JSONL file; errors name the file and line."""
    path = Path(path)
    pairs = []
    for where, number, record in jsonl_objects(path, "prompt-pair file"):
        fields = ("text", "correct", "incorrect")
        if not all(isinstance(record.get(key), str) and record[key] for key in fields):
            raise PromptFileError(
                f'{where}: expected an object with non-empty "text", "correct" and '
                '"incorrect" strings'
            )
        pair_id = str(record.get("id", f"line-{number}"))
        pairs.append(PromptPair(pair_id, record["text"], record["correct"], record["incorrect"]))
    if not pairs:
        raise PromptFileError(f"prompt-pair file {path} holds no pairs")
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        raise PromptFileError(f"prompt-pair file {path}: ids must be unique")
    return tuple(pairs)
