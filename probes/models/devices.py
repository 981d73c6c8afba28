"""Whether this machine has the torch device a model is asked to run on (checked before loading)."""

from __future__ import annotations

import torch

from probes.core.errors import HeadlabError
from probes.core.options import check_device


class ModelUnavailableError(HeadlabError, RuntimeError):
    """A model cannot be loaded here; the message names the model and what to do."""


def check_device_available(device: str) -> None:
    """`device` is a torch device this machine has (checked before any weights load)."""
    check_device(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelUnavailableError(
                f"device {device!r}: no CUDA GPU is visible here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); use --device cpu"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ModelUnavailableError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelUnavailableError("device 'mps': Apple's Metal backend is not available here")
