"""Vision-language models: what every architecture shares (how a model reads an image, real
checkpoints' preprocessor configs, loading without transformers' processors).

`VisionInputs` says what an image becomes for one model (the token that stands for an image
feature, how many of them, and how pixels are prepared). It is built from the model's config and,
for a real checkpoint, its `preprocessor_config.json`, read as JSON: transformers' processors
need torchvision, which does not import beside this CPU torch, so headlab prepares pixels itself
(probes/inputs/images.py). Each architecture's part is its own module (vision_llava.py, ...),
listed in vision_architectures.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.core.errors import HeadlabError

if TYPE_CHECKING:
    pass

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # transformers.image_utils.OPENAI_CLIP_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PLACEHOLDER = "<image>"  # what a prompt's text holds where its image goes, for every model
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

    architecture: str  # which reader prepares its images (probes/inputs/images.py READERS)
    image_token_id: int  # the token standing for one image feature
    n_image_tokens: int | None  # how many one image becomes; None: it depends on the image
    processing: Any  # the architecture's pixel steps (LLaVA: `ImageProcessing`)
    placeholder: str = PLACEHOLDER
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)


def is_vision_config(config: Any) -> bool:
    """Whether a transformers config describes a vision-language model."""
    return getattr(config, "vision_config", None) is not None


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
