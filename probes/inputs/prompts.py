"""Prompt suites: real English text available offline, or any JSONL file of prompts.

The default text is harvested at run time from the docstrings of the Python standard library
(prose written by people, no downloads). A suite is hashed so a run records exactly what it read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from probes.inputs.files import MAX_FILE_BYTES, PromptFileError
from probes.inputs.image_files import checked_image, file_sha256

# Standard-library modules whose documentation is mostly prose. Order fixes the corpus.
DOC_MODULES = (
    "argparse",
    "json",
    "re",
    "csv",
    "statistics",
    "configparser",
    "heapq",
    "http.client",
    "urllib.request",
    "socket",
    "hashlib",
    "unittest",
    "doctest",
    "pdb",
    "pydoc",
    "uuid",
    "xml.etree.ElementTree",
    "io",
    "os",
    "tempfile",
    "subprocess",
    "itertools",
    "difflib",
    "sqlite3",
    "inspect",
    "ast",
    "typing",
    "collections",
    "random",
    "string",
    "wave",
    "calendar",
    "pickle",
    "logging",
    "shutil",
    "functools",
    "threading",
    "decimal",
    "fractions",
    "datetime",
    "pathlib",
    "dataclasses",
    "enum",
    "contextlib",
    "textwrap",
    "zipfile",
    "tarfile",
    "email",
)
_CODE_HINTS = re.compile(r">>>|\.\.\.\s|::|[{}\[\]=<>|\\]|^\s*[-*]\s")


# Prompt, needle and pair files are read at most this far (a JSONL of long prompts is a few MB).


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text and an `id` unique within its suite (rows of a scan name it); an
    image prompt also names its image file, and its text holds the placeholder `<image>` once."""

    id: str
    text: str
    image: Path | None = None


@dataclass(frozen=True)
class PromptSuite:
    """Prompts run together, with a `name` and a `source` (a file, a corpus) recorded in a run's
    manifest beside the suite's `sha256`."""

    name: str
    prompts: tuple[Prompt, ...]
    source: str

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for prompt in self.prompts:
            digest.update(json.dumps([prompt.id, prompt.text]).encode())
            if prompt.image is not None:  # text suites hash as they always did
                digest.update(file_sha256(prompt.image).encode())
        return digest.hexdigest()

    @property
    def has_images(self) -> bool:
        """Whether the suite's prompts are image prompts (a suite is all or none)."""
        return any(prompt.image is not None for prompt in self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)


def _prose_paragraphs(doc: str) -> list[str]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", doc):
        text = " ".join(block.split())
        words = text.split()
        if len(words) < 12 or _CODE_HINTS.search(block):
            continue
        letters = sum(ch.isalpha() or ch.isspace() for ch in text)
        if letters / len(text) > 0.85:
            paragraphs.append(text)
    return paragraphs


@functools.cache
def stdlib_docs_text(modules: tuple[str, ...] = DOC_MODULES) -> tuple[str, ...]:
    """Prose paragraphs from the docstrings of `modules` and their public members, in order."""
    with warnings.catch_warnings():
        # Reading docstrings touches deprecated aliases (typing.io); that is not our concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _harvest(modules)


def _harvest(modules: tuple[str, ...]) -> tuple[str, ...]:
    paragraphs: list[str] = []
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        for member_name, member in sorted(vars(module).items()):
            if member_name.startswith("_") or getattr(member, "__module__", None) != module_name:
                continue
            if inspect.isclass(member) or inspect.isfunction(member):
                docs.append(inspect.getdoc(member) or "")
        for doc in docs:
            paragraphs.extend(_prose_paragraphs(doc))
    return tuple(dict.fromkeys(paragraphs))  # drop repeated boilerplate, keep order


def stdlib_docs_suite(n_prompts: int = 16, words_per_prompt: int = 400) -> PromptSuite:
    """`n_prompts` passages of about `words_per_prompt` words of standard-library prose."""
    words = " ".join(stdlib_docs_text()).split()
    needed = n_prompts * words_per_prompt
    if len(words) < needed:
        raise ValueError(
            f"the standard-library corpus has {len(words)} words; {needed} were asked for "
            f"(n_prompts={n_prompts} × words_per_prompt={words_per_prompt})"
        )
    prompts = tuple(
        Prompt(id=f"stdlib-{index:03d}", text=" ".join(words[start : start + words_per_prompt]))
        for index, start in enumerate(range(0, needed, words_per_prompt))
    )
    return PromptSuite(name="stdlib-docs", prompts=prompts, source="python-stdlib-docstrings")


def text_suite(texts: Sequence[str], name: str = "texts") -> PromptSuite:
    """Prompts from a list of strings, with ids text-000, text-001, …; empty text is refused."""
    if isinstance(texts, str):
        texts = [texts]
    prompts = []
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"prompt {index} of the list is not non-empty text: {text!r}")
        prompts.append(Prompt(id=f"text-{index:03d}", text=text))
    if not prompts:
        raise PromptFileError("the list of prompts is empty")
    return PromptSuite(name=name, prompts=tuple(prompts), source=f"{len(prompts)} texts")


def jsonl_objects(path: Path | str, what: str) -> Iterator[tuple[str, int, dict]]:
    """(`file:line`, line number, object) per non-blank line of a JSONL file of `what` ("prompt
    file", "needle file", ...); a missing file, bad text or a line that is not a JSON object is
    an error naming the file and line."""
    for where, number, line in bounded_lines(path, what):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise PromptFileError(f"{where}: expected a JSON object")
        for key, value in record.items():
            if isinstance(value, str) and not _encodable(value):
                raise PromptFileError(
                    f"{where}: {key!r} holds a lone surrogate (an escape such as \\ud800 "
                    "that is no character); fix the text"
                )
        yield where, number, record


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_text_file(path: Path | str, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A UTF-8 text file read at most `max_bytes` far: a missing file, a directory, a device
    without end (/dev/zero), a file over the limit or bad text is an error naming the file."""
    path = Path(path)
    if path.is_dir():
        raise PromptFileError(f"{what} {path} is a directory, not a file")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as error:
        raise PromptFileError(f"{what} {path} does not exist") from error
    except OSError as error:
        raise PromptFileError(f"{what} {path} cannot be read: {error.strerror}") from error
    if len(data) > max_bytes:
        raise PromptFileError(
            f"{what} {path} is larger than {max_bytes // 2**20} MiB; split it or shorten it"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise PromptFileError(f"{path}:{line}: {what} is not UTF-8 text ({error.reason})") from None


def bounded_lines(path: Path | str, what: str) -> Iterator[tuple[str, int, str]]:
    """(`file:line`, line number, text) of each line of a text file (`read_text_file`)."""
    for number, line in enumerate(read_text_file(path, what).splitlines(), start=1):
        yield f"{path}:{number}", number, line


def load_jsonl(path: Path | str) -> PromptSuite:
    """Prompts from a JSONL file: one object per line with a "text" field and an optional "id";
    image prompts add "image", a file path relative to the JSONL file's directory (all lines or
    none; probes/inputs/image_files.py)."""
    path = Path(path)
    prompts = []
    kinds: dict[bool, str] = {}  # image prompt or not -> the first line of that kind
    for where, number, record in jsonl_objects(path, "prompt file"):
        if not isinstance(record.get("text"), str):
            raise PromptFileError(f'{where}: expected an object with a "text" string')
        if not record["text"].strip():
            raise PromptFileError(f"{where}: the prompt text is empty")
        given = record.get("id", f"line-{number}")
        if isinstance(given, bool) or not isinstance(given, str | int) or str(given) == "":
            raise PromptFileError(f'{where}: "id" must be text or a whole number, got {given!r}')
        image = None
        if "image" in record:
            image = checked_image(record["image"], record["text"], where, path.parent)
        kinds.setdefault(image is not None, where)
        if len(kinds) == 2:
            raise PromptFileError(
                f"{where}: {'an image' if image else 'a text'} prompt, but {kinds[image is None]} "
                f"is {'a text' if image else 'an image'} prompt; a prompt file holds image "
                "prompts only or text prompts only"
            )
        prompts.append(Prompt(id=str(given), text=record["text"], image=image))
    if not prompts:
        raise PromptFileError(f"prompt file {path} holds no prompts")
    ids = [prompt.id for prompt in prompts]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise PromptFileError(f"prompt file {path}: the id {duplicate!r} appears more than once")
    return PromptSuite(name=path.stem, prompts=tuple(prompts), source=str(path))
