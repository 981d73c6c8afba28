"""Vision-language models: how a model reads an image, its tiny random instances, real checkpoints.

`VisionInputs` says what an image becomes for one model (the token that stands for a patch, how
many of them, and how pixels are prepared: `ImageProcessing`, the steps of transformers' CLIP
image processor). It is built from the model's config and, for a real checkpoint, its
`preprocessor_config.json`, read as JSON: transformers' processors need torchvision, which does
not import beside this CPU torch, so headlab prepares pixels itself (probes/inputs/images.py).

`tiny-random-llava[-SEED]` is a random-weight LLaVA shaped like llava-hf/llava-1.5-7b-hf (a CLIP
vision tower with 14-pixel patches, the penultimate layer's features without CLS, a two-layer
GELU projector, a Llama text model) but tiny: a 56-pixel image is 4 × 4 = 16 patches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from probes.core.errors import HeadlabError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # transformers.image_utils.OPENAI_CLIP_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PLACEHOLDER = "<image>"  # what a prompt's text holds where its image goes, for every model
TINY_LLAVA = "tiny-random-llava"
# PIL's resampling filters by the numbers transformers' processor configs store.
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class VisionModelError(HeadlabError, ValueError):
    """A vision-language model cannot be used as asked (an architecture headlab does not read
    images for, a preprocessor config it does not follow); the message names the model."""


@dataclass(frozen=True)
class ImageProcessing:
    """CLIP's image preprocessing (transformers' CLIPImageProcessor, slow path), step by step:
    RGB (alpha composited on white); resize so the shortest edge is `shortest_edge` (the long
    edge int(size · long / short)) with `resample`; center-crop to `crop_height` × `crop_width`;
    × `rescale_factor`; normalise with `mean` / `std` per channel."""

    shortest_edge: int
    crop_height: int
    crop_width: int
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def clip(cls, size: int) -> ImageProcessing:
        """The CLIP defaults at a square `size` (shortest edge and crop both `size`)."""
        return cls(size, size, size)

    @classmethod
    def from_preprocessor(cls, record: dict[str, Any], where: str) -> ImageProcessing:
        """From a checkpoint's preprocessor_config.json (CLIPImageProcessor's keys)."""
        size, crop = record.get("size", {}), record.get("crop_size", {})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        steps = ("do_resize", "do_center_crop", "do_rescale", "do_normalize")
        skipped = [step for step in steps if record.get(step) is False]
        if skipped or not isinstance(size, dict) or "shortest_edge" not in size:
            raise VisionModelError(
                f"{where}: headlab follows CLIP's preprocessing (resize the shortest edge, "
                f"center-crop, rescale, normalise); this config has size={size!r} and skips "
                f"{skipped}"
            )
        resample = record.get("resample", 3)
        return cls(
            shortest_edge=int(size["shortest_edge"]),
            crop_height=int(crop.get("height", size["shortest_edge"])),
            crop_width=int(crop.get("width", size["shortest_edge"])),
            resample=RESAMPLE_NAMES.get(resample, str(resample)),
            rescale_factor=float(record.get("rescale_factor", 1 / 255)),
            mean=_triple(record.get("image_mean", CLIP_MEAN), "image_mean", where),
            std=_triple(record.get("image_std", CLIP_STD), "image_std", where),
        )


def _triple(values: Any, name: str, where: str) -> tuple[float, float, float]:
    """Three per-channel numbers of a preprocessor config."""
    if not isinstance(values, list | tuple) or len(values) != 3:
        raise VisionModelError(f"{where}: {name} must be three numbers, got {values!r}")
    return float(values[0]), float(values[1]), float(values[2])


@dataclass(frozen=True)
class VisionInputs:
    """How one model reads an image: the token standing for one image feature, how many of them
    one image becomes (`n_image_tokens`), and how its pixels are prepared."""

    architecture: str
    image_token_id: int
    n_image_tokens: int
    processing: ImageProcessing
    placeholder: str = PLACEHOLDER
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def llava(cls, config: Any, processing: ImageProcessing | None = None) -> VisionInputs:
        """From a LlavaConfig: (image_size / patch_size)² patches, plus CLS if the strategy is
        "full" (LLaVA's "default" drops it); CLIP preprocessing at the tower's size unless the
        checkpoint's own is given."""
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        extra = int(config.vision_feature_select_strategy == "full")
        return cls(
            "llava",
            int(config.image_token_id),
            patches + extra,
            processing or ImageProcessing.clip(vision.image_size),
        )


def check_reads_images(name: str) -> None:
    """Refuse image prompts for a model known by name to be a text model (a registry model or
    `tiny-random[-SEED]`), before it loads; other names are checked once loaded."""
    from probes.models.registry import REGISTRY

    if name in REGISTRY or re.fullmatch(r"tiny-random(-\d+)?", name):
        raise VisionModelError(
            f"model {name!r} is a text model and reads no images; give a vision-language model "
            f"(e.g. {TINY_LLAVA}, or a LLaVA checkpoint's Hugging Face id or directory)"
        )


def is_vision_config(config: Any) -> bool:
    """Whether a transformers config describes a vision-language model."""
    return getattr(config, "vision_config", None) is not None


def vision_inputs(config: Any, preprocessor: dict[str, Any] | None, where: str) -> VisionInputs:
    """The `VisionInputs` of a loaded vision-language model's config (and preprocessor config)."""
    if config.model_type != "llava":
        raise VisionModelError(
            f"{where}: headlab reads images for LLaVA (model_type 'llava') so far, not "
            f"{config.model_type!r}"
        )
    processing = ImageProcessing.from_preprocessor(preprocessor, where) if preprocessor else None
    return VisionInputs.llava(config, processing)


def model_class(source: str, revision: str | None, local_files_only: bool = False) -> Any:
    """The transformers auto class that loads `source`: image-text-to-text for a config with a
    vision tower, causal LM otherwise (reading the config raises OSError when it is absent)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(
        source, revision=revision, local_files_only=local_files_only
    )
    return AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM


def read_preprocessor(source: str, revision: str | None = None) -> dict[str, Any] | None:
    """A local directory's or cached hub checkpoint's preprocessor_config.json, or None."""
    from transformers.utils import cached_file

    if Path(source).is_dir():
        path = Path(source) / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else None
    try:
        found = cached_file(
            source,
            "preprocessor_config.json",
            revision=revision,
            local_files_only=True,
            _raise_exceptions_for_missing_entries=False,
        )
    except OSError:
        return None
    return json.loads(Path(found).read_text()) if found else None


def tiny_llava(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VisionInputs]:
    """A random-weight LLaVA shaped like llava-1.5 but tiny, with the word tokenizer and an
    added `<image>` token; generated under `seed` without touching the global generator."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from probes.models.tiny import word_tokenizer

    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]})
    image_token = int(tokenizer.convert_tokens_to_ids(PLACEHOLDER))  # type: ignore[arg-type]
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(  # type: ignore[call-arg]  # @strict __init__ takes **kwargs too
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        attn_implementation="eager",
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), tokenizer, VisionInputs.llava(config)


@contextmanager
def without_processor_loading() -> Iterator[None]:
    """TransformerBridge.boot_transformers, for a multimodal model, loads an AutoProcessor by
    the model's name (a hub request, retried for minutes, when the name is no directory) and,
    when that fails, pip-installs torchvision into the running environment (which replaces this
    CPU torch). headlab prepares images itself and never uses that processor: skip the step."""
    from transformer_lens.model_bridge.sources.transformers import source

    original = source.load_modality_processor
    source.load_modality_processor = _no_processor
    try:
        yield
    finally:
        source.load_modality_processor = original


def _no_processor(*args: Any, **kwargs: Any) -> None:
    return None
