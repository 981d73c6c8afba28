"""The headlab error tree: every error a user can cause is a `HeadlabError`, and its message names
the input that is wrong (file and line, flag, parameter, model or run). The CLI turns each one into
a single `headlab: error: ...` line with exit status 2; any other exception is a bug and keeps its
traceback. This module imports nothing, so every layer (torch-free ones too) can raise these.
"""

from __future__ import annotations


class HeadlabError(Exception):
    """Base of every error caused by input a user controls."""


class ConfigError(HeadlabError, ValueError):
    """A configuration value, probe parameter or intervention argument is of the wrong type or
    out of range; the message names the field."""


class PromptTooLongError(HeadlabError, ValueError):
    """A prompt does not fit the model's context; the message names the prompt and the limit."""


class HeadlabWarning(UserWarning):
    """Something a user asked for ran but probably not as meant (e.g. an intervention that
    changed nothing); the message says why and what to do instead."""
