"""Random-weight models shaped like real ones, for timing and memory at scale (never a default).

`random-llama-3-8b` has Llama-3-8B's config (hidden 4096, 32 layers, 32 query and 8 KV heads,
MLP 14336, vocabulary 128256, rope theta 500000, 131072 positions) and random weights; it is
built on the meta device and materialised straight on the target device in the target dtype, so
its 16 GB of bf16 weights never pass through CPU memory. `random-llama-3-8b-mini` keeps the
ratios (4 query heads per KV head, MLP 3.5× hidden, the rope theta and context) at a size CPU
tests can run. Both read text with the tiny models' word tokenizer (its ids are all < vocab).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from probes.core.types import ModelInfo
from probes.models.tiny import word_tokenizer

INIT_STD = 0.02  # Llama's initializer_range


@dataclass(frozen=True)
class Shape:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_mlp: int
    vocab: int | None  # None: the word tokenizer's size
    n_ctx: int = 131072
    rope_theta: float = 500000.0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


SHAPES: dict[str, Shape] = {
    "random-llama-3-8b": Shape(32, 32, 8, 4096, 14336, 128256),
    "random-llama-3-8b-mini": Shape(4, 8, 2, 256, 896, None),
}


def llama_config(shape: Shape, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    config = LlamaConfig(  # type: ignore[call-arg]  # @strict __init__ takes config **kwargs too
        vocab_size=shape.vocab or len(tokenizer),
        hidden_size=shape.d_model,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.d_head,
        max_position_embeddings=shape.n_ctx,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    config.architectures = ["LlamaForCausalLM"]
    return config


def model_info(name: str) -> ModelInfo:
    """The shape of a random-shape model, without building it."""
    shape = SHAPES[name]
    tokenizer = word_tokenizer()
    return ModelInfo(
        name=name,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_kv_heads,
        d_head=shape.d_head,
        d_model=shape.d_model,
        n_ctx=shape.n_ctx,
        bos_token_id=tokenizer.bos_token_id,
        d_vocab=shape.vocab or len(tokenizer),
    )


def build(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The model `name` of SHAPES, random weights (normal, std 0.02; norms 1) drawn on `device`
    in `dtype` from `seed`, with the word tokenizer."""
    tokenizer = word_tokenizer()
    config = llama_config(SHAPES[name], tokenizer)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)  # type: ignore[arg-type]  # HF to() is @wraps(Module.to)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:  # RMSNorm weights
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, INIT_STD, generator=generator)
        for module in model.modules():  # rotary frequencies were computed on meta: redo them,
            if hasattr(module, "inv_freq") and hasattr(module, "compute_default_rope_parameters"):
                inv_freq, _ = module.compute_default_rope_parameters(config, device=device)
                module.inv_freq = inv_freq  # in float32, as Hugging Face keeps them
                module.original_inv_freq = inv_freq.clone()
    return model.eval(), tokenizer
