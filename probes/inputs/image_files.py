"""Image prompts in JSONL files: the "image" field checked where the file is read (torch-free).

A line `{"id": ..., "text": "... <image> ...", "image": "red.png"}` names an image file relative
to the JSONL file's directory (or absolute); the text holds the placeholder `<image>` exactly
once, where the model's image tokens go. Every error names the file and line and is raised while
the prompts are read, before any model loads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from probes.inputs.files import MAX_FILE_BYTES, PromptFileError

PLACEHOLDER = "<image>"  # probes.models.vision.PLACEHOLDER: the same text for every model


def checked_image(value: Any, text: str, where: str, base: Path) -> Path:
    """The image file a prompt line names, resolved against `base`: it exists, is a file PIL
    reads as an image, and the line's text holds the placeholder exactly once."""
    if not isinstance(value, str) or not value.strip():
        raise PromptFileError(f'{where}: "image" must be the path of an image file, got {value!r}')
    count = text.count(PLACEHOLDER)
    if count != 1:
        raise PromptFileError(
            f"{where}: the text of an image prompt must hold the placeholder {PLACEHOLDER!r} "
            f"exactly once (where the image goes); it holds it {count} times"
        )
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        raise PromptFileError(f"{where}: image {path} is a directory, not an image file")
    if not path.is_file():
        raise PromptFileError(f"{where}: image file {path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise PromptFileError(f"{where}: image {path} is larger than {MAX_FILE_BYTES >> 20} MiB")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PromptFileError(f"{where}: image file {path} is not an image PIL can read") from None
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (an image prompt's hash covers its image)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
