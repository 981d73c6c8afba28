"""Model registry and loading: offline PyPI models, any HF model, tiny random test models."""

from probes.core.options import DEFAULT_MODEL
from probes.models.loading import (
    LoadedModel,
    ModelInfo,
    ModelUnavailableError,
    check_name,
    decode_text,
    load,
    prepare,
    wrap,
)
from probes.models.registry import REGISTRY, ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "LoadedModel",
    "ModelInfo",
    "ModelSpec",
    "ModelUnavailableError",
    "check_name",
    "decode_text",
    "load",
    "prepare",
    "wrap",
]
