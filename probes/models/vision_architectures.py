"""The vision-language architectures headlab reads images for: by a config's `model_type`, how
its `VisionInputs` are built, and the tiny random instance the tests use.

A new architecture is a module of its own (vision_llava.py shows the parts) and one entry here,
plus its image reader in probes/inputs/images.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probes.models.vision import VisionInputs, VisionModelError
from probes.models.vision_idefics3 import (
    TINY_IDEFICS3,
    idefics3_inputs,
    idefics3_tokens,
    tiny_idefics3,
)
from probes.models.vision_llava import TINY_LLAVA, llava_inputs, tiny_llava
from probes.models.vision_qwen import TINY_QWEN, qwen_inputs, tiny_qwen

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TinyBuilder = Callable[[int], "tuple[PreTrainedModel, PreTrainedTokenizerBase, VisionInputs]"]


@dataclass(frozen=True)
class Architecture:
    """One vision-language architecture: `inputs(config, preprocessor_config, where)` and
    `tiny(seed)`, named `tiny_name[-SEED]`; `checkpoint` is a real one it is shaped like;
    `tokens(inputs, tokenizer, where)`, where an image's tokens include ids only the tokenizer
    knows (Idefics3's crop tags)."""

    model_type: str
    inputs: Callable[[Any, dict[str, Any] | None, str], VisionInputs]
    tiny_name: str
    tiny: TinyBuilder
    checkpoint: str
    tokens: Callable[[VisionInputs, Any, str], VisionInputs] | None = None


ARCHITECTURES: dict[str, Architecture] = {
    "llava": Architecture(
        "llava", llava_inputs, TINY_LLAVA, tiny_llava, "llava-hf/llava-1.5-7b-hf"
    ),
    "idefics3": Architecture(
        "idefics3",
        idefics3_inputs,
        TINY_IDEFICS3,
        tiny_idefics3,
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        tokens=idefics3_tokens,
    ),
    "qwen2_5_vl": Architecture(
        "qwen2_5_vl", qwen_inputs, TINY_QWEN, tiny_qwen, "Qwen/Qwen2.5-VL-3B-Instruct"
    ),
}


def vision_inputs(
    config: Any, preprocessor: dict[str, Any] | None, where: str, tokenizer: Any = None
) -> VisionInputs:
    """The `VisionInputs` of a loaded vision-language model's config (and preprocessor config,
    and tokenizer, which some architectures need)."""
    if config.model_type not in ARCHITECTURES:
        raise VisionModelError(
            f"{where}: headlab reads images for model_type "
            f"{', '.join(repr(t) for t in sorted(ARCHITECTURES))} so far, not "
            f"{config.model_type!r}"
        )
    architecture = ARCHITECTURES[config.model_type]
    inputs = architecture.inputs(config, preprocessor, where)
    if architecture.tokens is None:
        return inputs
    return architecture.tokens(inputs, tokenizer, where)


def tiny_architecture(name: str) -> Architecture | None:
    """The architecture whose tiny random model `name` names (`tiny_name` or `tiny_name-…`)."""
    matches = [
        arch
        for arch in ARCHITECTURES.values()
        if name == arch.tiny_name or name.startswith(f"{arch.tiny_name}-")
    ]
    return max(matches, key=lambda arch: len(arch.tiny_name), default=None)


def tiny_vision_names() -> str:
    return ", ".join(f"{arch.tiny_name}[-SEED]" for arch in ARCHITECTURES.values())


def check_reads_images(name: str) -> None:
    """Refuse image prompts for a model known by name to be a text model (a registry model or
    `tiny-random[-SEED]`), before it loads; other names are checked once loaded."""
    from probes.models.registry import REGISTRY

    if name in REGISTRY or re.fullmatch(r"tiny-random(-\d+)?", name):
        raise VisionModelError(
            f"model {name!r} is a text model and reads no images; give a vision-language model "
            f"({tiny_vision_names()}, or a checkpoint's Hugging Face id or directory)"
        )
