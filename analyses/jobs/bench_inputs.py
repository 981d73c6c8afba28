"""What a bench measurement runs on: one sequence of standard-library prose, and the plain
Hugging Face model (SDPA attention, no TransformerLens) that the scan is measured against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def bench_tokens(tokenize: Callable[[str], list[int]], n_tokens: int) -> torch.Tensor:
    """One sequence of exactly `n_tokens` tokens (BOS first) of standard-library prose. The
    offline corpus holds about 24k words (some 30k tokens); longer sequences repeat it, which
    changes what heads attend to but not what the scan costs."""
    import torch

    from probes.inputs.prompts import stdlib_docs_text

    words = " ".join(stdlib_docs_text()).split()
    text = " ".join(words[: max(64, n_tokens)])  # prose runs about 1.3 tokens per word
    ids = tokenize(text)
    while len(ids) < n_tokens:
        text = f"{text} {text}"
        longer = tokenize(text)
        if len(longer) <= len(ids):
            raise ValueError(
                f"the offline corpus gave {len(ids)} tokens; {n_tokens} were asked for"
            )
        ids = longer
    return torch.tensor([ids[:n_tokens]])


def plain_model(
    model_name: str, dtype: str = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, Callable[[str], list[int]]]:
    """The Hugging Face model alone with SDPA attention: no TransformerLens import, no bridge."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes import bridge
    from probes.models import REGISTRY, gguf_cache, random_shapes
    from probes.models.loading import TINY_PREFIX, prepare, tiny_seed
    from probes.models.tiny import TinyConfig, tiny_llama

    hf_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    if model_name.startswith(TINY_PREFIX):
        hf_model, tokenizer = tiny_llama(TinyConfig(seed=tiny_seed(model_name)))
        bridge.use_sdpa(hf_model)
    elif model_name in random_shapes.SHAPES:  # drawn on the device, in the dtype
        hf_model, tokenizer = random_shapes.build(model_name, device, getattr(torch, dtype))
        bridge.use_sdpa(hf_model)
    else:
        source: str | Path = model_name
        if model_name in REGISTRY:
            source = gguf_cache.converted_dir(gguf_cache.default_cache_dir(), model_name)
            if gguf_cache.read_conversion_record(source) is None:
                source = prepare(model_name, install=False)
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), attn_implementation="sdpa", use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(source)

    def tokenize(text: str) -> list[int]:
        return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]

    hf_model = hf_model.to(device=device, dtype=getattr(torch, dtype))  # type: ignore[call-arg]
    return hf_model.eval(), tokenize
