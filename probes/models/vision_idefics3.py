"""Idefics3 (HuggingFaceTB/SmolVLM-256M-Instruct and its kind): what an image becomes, and a tiny
random one.

An Idefics3 image is resized (longest edge `longest_edge`), cut into a grid of square crops of
`crop_size` plus a global view of the whole image at `crop_size`; each view is `image_seq_len`
image tokens ((image_size / patch_size)² patches, pixel-shuffled by `scale_factor`²), wrapped in
`<fake_token_around_image>` and a `<row_r_col_c>` or `<global-img>` tag (transformers'
Idefics3ImageProcessor and Idefics3Processor). Those tags are tokens of the checkpoint's
tokenizer, so their ids are read from it once the tokenizer is there (`idefics3_tokens`).

`tiny-random-idefics3[-SEED]` is a random-weight Idefics3 shaped like SmolVLM-256M (a SigLIP
tower, a scale-factor pixel shuffle, a Llama text model) but tiny: 32-pixel crops of 4-pixel
patches, 8 × 8 patches shuffled by 2 into 16 image tokens per view, images resized to a longest
edge of 64 (a square image: 2 × 2 crops and the global view, 80 image tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from probes.models.vision import (
    PLACEHOLDER,
    RESAMPLE_NAMES,
    VisionInputs,
    VisionModelError,
    _triple,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TINY_IDEFICS3 = "tiny-random-idefics3"
FAKE_TOKEN = "<fake_token_around_image>"
GLOBAL_TAG = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
MAX_GRID = 6  # Idefics3Processor knows <row_r_col_c> tags up to 6 × 6
IMAGENET_STANDARD = (0.5, 0.5, 0.5)  # transformers.image_utils.IMAGENET_STANDARD_MEAN and _STD
# The tiny model's preprocessor config, in a checkpoint's keys (saved with it by tests).
TINY_PREPROCESSOR: dict[str, Any] = {
    "image_processor_type": "Idefics3ImageProcessor",
    "do_image_splitting": True,
    "size": {"longest_edge": 64},
    "max_image_size": {"longest_edge": 32},
    "resample": 1,
    "image_mean": list(IMAGENET_STANDARD),
    "image_std": list(IMAGENET_STANDARD),
}


def row_col_tags() -> dict[tuple[int, int], str]:
    """The tag before crop (row, column), both from 1, by (row, column)."""
    cells = [(r, c) for r in range(1, MAX_GRID + 1) for c in range(1, MAX_GRID + 1)]
    return {(r, c): f"<row_{r}_col_{c}>" for r, c in cells}


@dataclass(frozen=True)
class ImageTokenIds:
    """The tokenizer's ids of what wraps an image's views: the fake token, the global tag,
    `<row_r_col_c>` by (r, c), and the ids of "\\n" (after each row of crops) and "\\n\\n"
    (after the last row, before the global view), which a word tokenizer drops."""

    fake: int
    global_tag: int
    row_col: dict[tuple[int, int], int]
    newline: tuple[int, ...]
    double_newline: tuple[int, ...]


@dataclass(frozen=True)
class SplitProcessing:
    """Idefics3's image preprocessing (transformers' Idefics3ImageProcessor, PIL path): RGB;
    resize so the longest edge is `longest_edge` (the other int(·) of it, rounded up to even),
    with `resample`; with `do_image_splitting`, resize each side up to a multiple of
    `crop_size` and cut it into crops of `crop_size` (row by row), then the whole image at
    `crop_size` × `crop_size` last; without, only that square view. × `rescale_factor`,
    normalised with `mean` / `std`. Each view is `image_seq_len` image tokens; `tokens` are the
    wrapping tokens' ids, known once the tokenizer is (None before)."""

    longest_edge: int
    crop_size: int
    image_seq_len: int
    do_image_splitting: bool = True
    resample: str = "lanczos"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_STANDARD
    std: tuple[float, float, float] = IMAGENET_STANDARD
    tokens: ImageTokenIds | None = None

    @classmethod
    def from_preprocessor(
        cls, record: dict[str, Any], image_seq_len: int, where: str
    ) -> SplitProcessing:
        """From a checkpoint's preprocessor_config.json (Idefics3ImageProcessor's keys; its
        defaults where a key is absent)."""
        size, crop = record.get("size", {}), record.get("max_image_size", {"longest_edge": 364})
        skipped = [
            step
            for step in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb")
            if record.get(step) is False
        ]
        if skipped or not isinstance(size, dict) or "longest_edge" not in size:
            raise VisionModelError(
                f"{where}: headlab follows Idefics3's preprocessing (resize the longest edge, "
                f"split into crops, rescale, normalise); this config has size={size!r} and "
                f"skips {skipped}"
            )
        if not isinstance(crop, dict) or "longest_edge" not in crop:
            raise VisionModelError(
                f"{where}: max_image_size must be {{'longest_edge': N}}, got {crop!r}"
            )
        resample = record.get("resample", 1)
        return cls(
            longest_edge=int(size["longest_edge"]),
            crop_size=int(crop["longest_edge"]),
            image_seq_len=image_seq_len,
            do_image_splitting=bool(record.get("do_image_splitting", True)),
            resample=RESAMPLE_NAMES.get(resample, str(resample)),
            rescale_factor=float(record.get("rescale_factor", 1 / 255)),
            mean=_triple(record.get("image_mean", IMAGENET_STANDARD), "image_mean", where),
            std=_triple(record.get("image_std", IMAGENET_STANDARD), "image_std", where),
        )


def image_seq_len(config: Any) -> int:
    """Image tokens per view: (image_size / patch_size)² patches over scale_factor²."""
    vision = config.vision_config
    patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
    return patches // int(config.scale_factor) ** 2


def idefics3_inputs(
    config: Any, preprocessor: dict[str, Any] | None = None, where: str = "idefics3"
) -> VisionInputs:
    """From an Idefics3Config (and the checkpoint's preprocessor config; without one, crops of
    the tower's image size and a longest edge of 4 crops, as SmolVLM's). The wrapping tokens'
    ids come from the tokenizer: `idefics3_tokens`."""
    seq_len = image_seq_len(config)
    size = int(config.vision_config.image_size)
    record = preprocessor or {
        "size": {"longest_edge": 4 * size},
        "max_image_size": {"longest_edge": size},
    }
    processing = SplitProcessing.from_preprocessor(record, seq_len, where)
    # The tower's position embeddings fit one crop: a larger crop would not run.
    if processing.crop_size != size:
        raise VisionModelError(
            f"{where}: max_image_size {processing.crop_size} is not the vision tower's "
            f"image_size {size}"
        )
    # Idefics3Processor has crop tags up to 6 × 6; more crops would be tagged with plain text.
    if math.ceil(processing.longest_edge / processing.crop_size) > MAX_GRID:
        raise VisionModelError(
            f"{where}: size longest_edge {processing.longest_edge} makes more than {MAX_GRID} "
            f"crops of {processing.crop_size} a side, beyond Idefics3's <row_r_col_c> tags"
        )
    return VisionInputs("idefics3", int(config.image_token_id), None, processing)


def idefics3_tokens(vision: VisionInputs, tokenizer: Any, where: str) -> VisionInputs:
    """`vision` with the ids of the tokens that wrap an image's views, from the tokenizer;
    a tokenizer without them is refused, naming the model."""
    vocab = tokenizer.get_vocab()
    tags = row_col_tags()
    needed = [FAKE_TOKEN, GLOBAL_TAG, PLACEHOLDER, *tags.values()]
    missing = [token for token in needed if token not in vocab]
    if missing:
        raise VisionModelError(
            f"{where}: its tokenizer lacks the Idefics3 image tokens {', '.join(missing[:3])}"
            f"{' …' if len(missing) > 3 else ''}"
        )
    if vocab[PLACEHOLDER] != vision.image_token_id:
        raise VisionModelError(
            f"{where}: its tokenizer's {PLACEHOLDER} is id {vocab[PLACEHOLDER]}, its config's "
            f"image_token_id {vision.image_token_id}"
        )
    ids = ImageTokenIds(
        fake=vocab[FAKE_TOKEN],
        global_tag=vocab[GLOBAL_TAG],
        row_col={cell: vocab[tag] for cell, tag in tags.items()},
        newline=tuple(tokenizer.encode("\n", add_special_tokens=False)),
        double_newline=tuple(tokenizer.encode("\n\n", add_special_tokens=False)),
    )
    return replace(vision, processing=replace(vision.processing, tokens=ids))


def special_tokens() -> list[str]:
    """The tokens SmolVLM's tokenizer adds for images (and the end of a turn)."""
    return [FAKE_TOKEN, PLACEHOLDER, END_OF_UTTERANCE, GLOBAL_TAG, *row_col_tags().values()]


def idefics3_tokenizer() -> PreTrainedTokenizerBase:
    """The word tokenizer with SmolVLM's image tokens added (as special tokens, so that a
    prompt's text splits around them)."""
    from probes.models.tiny import word_tokenizer

    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens()})
    return tokenizer


def tiny_idefics3(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VisionInputs]:
    """A random-weight Idefics3 shaped like SmolVLM-256M but tiny, with the word tokenizer and
    SmolVLM's image tokens; generated under `seed` without touching the global generator."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    from probes.models.tiny import seeded, vlm_text_config

    tokenizer = idefics3_tokenizer()
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=4,
    )
    text = vlm_text_config(tokenizer, 512, tie_word_embeddings=False)
    config = Idefics3Config(  # type: ignore[call-arg]  # @strict __init__ takes **kwargs too
        vision_config=vision,
        text_config=text,
        image_token_id=int(tokenizer.convert_tokens_to_ids(PLACEHOLDER)),  # type: ignore[arg-type]
        scale_factor=2,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    model = seeded(seed, Idefics3ForConditionalGeneration, config)
    inputs = idefics3_inputs(config, TINY_PREPROCESSOR, TINY_IDEFICS3)
    return model.eval(), tokenizer, idefics3_tokens(inputs, tokenizer, TINY_IDEFICS3)
