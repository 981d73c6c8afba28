"""LLaVA (llava-hf/llava-1.5-7b-hf and its kind): what an image becomes, and a tiny random one.

`tiny-random-llava[-SEED]` is a random-weight LLaVA shaped like llava-1.5 (a CLIP vision tower
with 14-pixel patches, the penultimate layer's features without CLS, a two-layer GELU projector,
a Llama text model) but tiny: a 56-pixel image is 4 × 4 = 16 patches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probes.models.vision import PLACEHOLDER, ImageProcessing, VisionInputs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TINY_LLAVA = "tiny-random-llava"


def llava_inputs(
    config: Any, preprocessor: dict[str, Any] | None = None, where: str = "llava"
) -> VisionInputs:
    """From a LlavaConfig: (image_size / patch_size)² patches, plus CLS if the strategy is
    "full" (LLaVA's "default" drops it); CLIP preprocessing at the tower's size unless the
    checkpoint's own preprocessor config is given."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    extra = int(config.vision_feature_select_strategy == "full")
    processing = (
        ImageProcessing.from_preprocessor(preprocessor, where)
        if preprocessor
        else ImageProcessing.clip(vision.image_size)
    )
    return VisionInputs("llava", int(config.image_token_id), patches + extra, processing)


def tiny_llava(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VisionInputs]:
    """A random-weight LLaVA shaped like llava-1.5 but tiny, with the word tokenizer and an
    added `<image>` token; generated under `seed` without touching the global generator."""
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from probes.models.tiny import seeded, vlm_text_config, word_tokenizer

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
    text = vlm_text_config(tokenizer, 256)
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
    model = seeded(seed, LlavaForConditionalGeneration, config)
    return model.eval(), tokenizer, llava_inputs(config)
