"""Qwen2.5-VL (Qwen/Qwen2.5-VL-3B-Instruct and its kind): what an image becomes, and a tiny
random one.

Qwen2.5-VL reads an image at (nearly) its own resolution: it is resized to multiples of
patch_size · merge_size (28 pixels) within [min_pixels, max_pixels], cut into 14-pixel patches,
and every 2 × 2 patches merge into one `<|image_pad|>` token, wrapped in `<|vision_start|>` …
`<|vision_end|>`. So the number of image tokens depends on the image (`n_image_tokens` is None).

`tiny-random-qwen2.5-vl[-SEED]` is a random-weight Qwen2_5_VLForConditionalGeneration shaped like
the 3B checkpoint (14-pixel patches, 2 × 2 merge, temporal patch 2, window attention with some
full-attention blocks, mRoPE sections in the 3B's 2 : 3 : 3 proportion, a Qwen2 text model with
grouped-query attention and tied embeddings) but tiny.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from probes.models.vision import (
    CLIP_MEAN,
    CLIP_STD,
    RESAMPLE_NAMES,
    VisionInputs,
    VisionModelError,
    _triple,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TINY_QWEN = "tiny-random-qwen2.5-vl"
IMAGE_PAD, VISION_START, VISION_END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"  # no videos here, but the model wants its own token for them
# Qwen2VLImageProcessor's defaults (min_pixels, max_pixels).
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 1280


@dataclass(frozen=True)
class QwenProcessing:
    """Qwen2-VL's image preprocessing (transformers' Qwen2VLImageProcessor) and the tokens that
    wrap an image: RGB; resize to `smart_resize`'s size with `resample`; × `rescale_factor`;
    normalise with `mean` / `std`; patches of `patch_size`, grouped `merge_size` × `merge_size`,
    each repeated `temporal_patch_size` times (a still image is one frame)."""

    start_token_id: int  # <|vision_start|>
    end_token_id: int  # <|vision_end|>
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        """What both sides of the resized image are multiples of."""
        return self.patch_size * self.merge_size


def qwen_inputs(
    config: Any, preprocessor: dict[str, Any] | None = None, where: str = "qwen2_5_vl"
) -> VisionInputs:
    """From a Qwen2_5_VLConfig (and a checkpoint's preprocessor_config.json): the tower's patch,
    merge and temporal patch sizes, the image / vision start / vision end token ids."""
    vision = config.vision_config
    tower: dict[str, Any] = {
        "patch_size": int(vision.patch_size),
        "merge_size": int(vision.spatial_merge_size),
        "temporal_patch_size": int(vision.temporal_patch_size),
    }
    steps: dict[str, Any] = {}
    if preprocessor:
        steps = _preprocessor_steps(preprocessor, where)
        for name, size in tower.items():
            if steps.pop(name, size) != size:
                raise VisionModelError(
                    f"{where}: preprocessor_config.json has {name}={preprocessor.get(name)!r} "
                    f"but the vision tower's config has {size}"
                )
    processing = QwenProcessing(
        start_token_id=int(config.vision_start_token_id),
        end_token_id=int(config.vision_end_token_id),
        **tower,
        **steps,
    )
    return VisionInputs("qwen2_5_vl", int(config.image_token_id), None, processing)


def _preprocessor_steps(record: dict[str, Any], where: str) -> dict[str, Any]:
    """QwenProcessing's fields from a preprocessor config (Qwen2VLImageProcessor's keys: the
    pixel bounds as min_pixels / max_pixels, or in `size` as shortest_edge / longest_edge)."""
    steps = ("do_resize", "do_rescale", "do_normalize")
    skipped = [step for step in steps if record.get(step) is False]
    if skipped:
        raise VisionModelError(
            f"{where}: headlab follows Qwen2-VL's preprocessing (resize, rescale, normalise); "
            f"this config skips {skipped}"
        )
    size = record.get("size") or {}
    found = {
        "min_pixels": record.get("min_pixels", size.get("shortest_edge", size.get("min_pixels"))),
        "max_pixels": record.get("max_pixels", size.get("longest_edge", size.get("max_pixels"))),
        "patch_size": record.get("patch_size"),
        "merge_size": record.get("merge_size"),
        "temporal_patch_size": record.get("temporal_patch_size"),
    }
    fields: dict[str, Any] = {name: int(v) for name, v in found.items() if v is not None}
    if fields.get("min_pixels", MIN_PIXELS) > fields.get("max_pixels", MAX_PIXELS):
        raise VisionModelError(f"{where}: min_pixels exceeds max_pixels in {found}")
    resample = record.get("resample", 3)
    fields["resample"] = RESAMPLE_NAMES.get(resample, str(resample))
    fields["rescale_factor"] = float(record.get("rescale_factor", 1 / 255))
    fields["mean"] = _triple(record.get("image_mean", CLIP_MEAN), "image_mean", where)
    fields["std"] = _triple(record.get("image_std", CLIP_STD), "image_std", where)
    return fields


@contextmanager
def without_torchvision_check() -> Iterator[None]:
    """TransformerLens's Qwen2.5-VL adapter refuses to boot unless torchvision is installed
    (`required_libraries`), for the processor it would load; torchvision does not import beside
    this CPU torch, and headlab prepares images itself (probes/inputs/images_qwen.py): lift the
    check while booting."""
    from transformer_lens.model_bridge.supported_architectures.qwen2_5_vl import (
        Qwen2_5_VLArchitectureAdapter as Adapter,
    )

    required = Adapter.required_libraries
    Adapter.required_libraries = []
    try:
        yield
    finally:
        Adapter.required_libraries = required


def adapt_qwen_bridge(bridge: Any) -> None:
    """Two fixes to a booted Qwen2.5-VL bridge (a no-op for other models).

    Attention hooks: TransformerLens's adapter keeps HF's own attention (for mRoPE) and fires
    `hook_attn_scores` and `hook_pattern` after it ran, on the returned weights: an edit there
    (a planted head, VAR's redistribution) is discarded, and `hook_attn_scores` sees
    post-softmax weights. Here each text-attention module's eager attention fires them where the
    bridge's own attention would (scores after the mask, before the softmax; the pattern before
    it weights the values), with numbers equal to HF's eager attention, and returns no weights,
    so the bridge's after-the-fact firing does not repeat them. The vision tower's attention is
    left as it is.

    Decoding positions: HF keeps the last prefill's mRoPE offset (`rope_deltas`) on the model
    and adds it to every cached decoding step after it, so a text prompt decoded after an image
    prompt would inherit the image's offset. It is cleared at every forward without a cache,
    where HF computes it afresh for an image prompt."""
    model: Any = getattr(bridge, "original_model", None)
    if getattr(getattr(model, "config", None), "model_type", None) != "qwen2_5_vl":
        return
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as modeling

    if not getattr(modeling.eager_attention_forward, "hooked_inside", False):
        modeling.eager_attention_forward = _hooked_eager(modeling)
    for block in bridge.blocks:
        attention = block.attn
        # Not a submodule (the bridge already holds the HF module): a plain attribute.
        object.__setattr__(
            attention.original_component,
            "_headlab_hooks",
            (attention.hook_attn_scores, attention.hook_pattern),
        )
    inner = model.model if hasattr(model, "model") else model
    if not getattr(inner, "_headlab_fresh_offsets", False):
        inner.register_forward_pre_hook(_fresh_offset, with_kwargs=True)
        object.__setattr__(inner, "_headlab_fresh_offsets", True)


def _fresh_offset(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
    cache = kwargs.get("past_key_values")
    if cache is None or cache.get_seq_length() == 0:
        module.rope_deltas = None


def _hooked_eager(modeling: Any) -> Any:
    """Qwen2.5-VL's eager_attention_forward, firing a module's headlab hooks when it has them."""
    original = modeling.eager_attention_forward

    def eager(
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hooks = getattr(module, "_headlab_hooks", None)
        if hooks is None:
            return original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        scores_hook, pattern_hook = hooks
        keys = modeling.repeat_kv(key, module.num_key_value_groups)
        values = modeling.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, keys.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        scores = scores_hook(scores)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
        pattern = pattern_hook(pattern)
        return torch.matmul(pattern, values).transpose(1, 2).contiguous(), None

    eager.hooked_inside = True  # type: ignore[attr-defined]
    return eager


def qwen_tokenizer() -> PreTrainedTokenizerBase:
    """The word tokenizer (probes/models/tiny.py) with Qwen's vision tokens added."""
    from probes.models.tiny import word_tokenizer

    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD]}
    )
    return tokenizer


def tiny_qwen(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VisionInputs]:
    """A random-weight Qwen2.5-VL shaped like Qwen2.5-VL-3B but tiny, generated under `seed`
    without touching the global generator. Its 4-block tower attends in windows of 2 × 2
    merged tokens (window_size 56 pixels) but for blocks 1 and 3 (full attention, as the 3B's
    7, 15, 23, 31)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from probes.models.tiny import seeded

    tokenizer = qwen_tokenizer()
    ids = {
        token: int(tokenizer.convert_tokens_to_ids(token))  # type: ignore[arg-type]
        for token in (VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD)
    }
    vision = {
        "depth": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1, 3],
        "out_hidden_size": 64,
        "tokens_per_second": 2,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,  # head_dim 16: 8 rotary frequencies, mRoPE sections 2 + 3 + 3
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Qwen2_5_VLConfig(  # type: ignore[call-arg]  # @strict __init__ takes **kwargs too
        vision_config=vision,
        text_config=text,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    model = seeded(seed, Qwen2_5_VLForConditionalGeneration, config)
    return model.eval(), tokenizer, qwen_inputs(config)


def tiny_preprocessor_config(vision: VisionInputs) -> dict[str, Any]:
    """A preprocessor_config.json for a saved tiny model, as Qwen2.5-VL checkpoints write it."""
    processing: QwenProcessing = vision.processing
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "min_pixels": processing.min_pixels,
        "max_pixels": processing.max_pixels,
        "patch_size": processing.patch_size,
        "merge_size": processing.merge_size,
        "temporal_patch_size": processing.temporal_patch_size,
        "image_mean": list(processing.mean),
        "image_std": list(processing.std),
        "resample": 3,
        "do_rescale": True,
        "do_normalize": True,
        "do_resize": True,
    }
