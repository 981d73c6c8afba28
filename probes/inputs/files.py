"""What every input file reader shares: the size limit and the error that names the file."""

from __future__ import annotations

from probes.core.errors import HeadlabError

# Prompt, needle, pair and image files are read at most this far (a JSONL of long prompts is a
# few MB).
MAX_FILE_BYTES = 64 * 2**20


class PromptFileError(HeadlabError, ValueError):
    """A prompt file is empty or malformed; the message names the file and line."""
