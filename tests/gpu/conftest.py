"""Tests marked `gpu` run on CUDA and compare with the same work on the CPU; without a GPU they
are skipped with the reason (scripts/gpu_check.sh runs them on a GPU machine).

HEADLAB_GPU_TEST_DEVICE=cpu runs the same tests on the CPU against itself: the dry run of the
GPU check (`make gpu-check-dry`) uses it to prove the tests' code before a GPU is at hand.
"""

from __future__ import annotations

import os

import pytest
import torch

GPU_DEVICE = os.environ.get("HEADLAB_GPU_TEST_DEVICE", "cuda")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not GPU_DEVICE.startswith("cuda") or torch.cuda.is_available():
        return
    reason = f"no CUDA GPU visible (torch {torch.__version__}, CUDA build {torch.version.cuda})"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
