"""Tiny random-weight models built from a config, for tests only (never a default)."""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"


@dataclass(frozen=True)
class TinyConfig:
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_head: int = 8
    d_mlp: int = 64
    n_ctx: int = 256
    seed: int = 0

    @property
    def d_model(self) -> int:
        return self.n_heads * self.d_head


def word_vocabulary() -> list[str]:
    """A fixed vocabulary: special tokens, lowercase letters, digits and a few hundred words."""
    words = [
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "is",
        "it",
        "that",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "at",
        "be",
        "this",
        "by",
        "from",
        "or",
        "have",
        "an",
        "they",
        "which",
        "one",
        "you",
        "were",
        "her",
        "all",
        "she",
        "there",
        "would",
        "their",
        "we",
        "him",
        "been",
        "has",
        "when",
        "who",
        "will",
        "more",
        "no",
        "if",
        "out",
        "so",
        "said",
        "what",
        "up",
        "its",
        "about",
        "into",
        "than",
        "them",
        "can",
        "only",
        "other",
        "new",
        "some",
        "could",
        "time",
        "these",
        "two",
        "may",
        "then",
        "do",
        "first",
        "any",
        "my",
        "now",
        "such",
        "like",
        "our",
        "over",
        "man",
        "me",
        "even",
        "most",
        "made",
        "after",
        "also",
        "did",
        "many",
        "before",
        "must",
        "through",
        "back",
        "years",
        "where",
        "much",
        "your",
        "way",
        "well",
        "down",
        "should",
        "because",
        "each",
        "just",
        "those",
        "people",
        "how",
        "too",
        "little",
        "state",
        "good",
        "very",
        "make",
        "world",
        "still",
        "own",
        "see",
        "men",
        "work",
        "long",
        "get",
        "here",
        "between",
        "both",
        "life",
        "being",
        "under",
        "never",
        "day",
        "same",
        "another",
        "know",
        "while",
        "last",
        "might",
        "us",
        "great",
        "old",
        "year",
        "off",
        "come",
        "since",
        "against",
        "go",
        "came",
        "right",
        "used",
        "take",
        "three",
        "capital",
        "france",
        "paris",
        "city",
        "river",
        "needle",
        "key",
        "secret",
        "number",
        "answer",
        "question",
        "color",
        "blue",
        "red",
        "green",
        "cat",
        "dog",
        "house",
        "book",
        "word",
        "name",
        "mary",
        "john",
        "gave",
        "ball",
        "went",
        "store",
        "park",
        "magic",
        "code",
        "best",
        "thing",
        "do",
        "san",
        "francisco",
    ]
    letters = list(string.ascii_lowercase) + list(string.digits) + list(".,?!:;'\"-")
    seen: dict[str, None] = dict.fromkeys([PAD, BOS, EOS, UNK, *words, *letters])
    return list(seen)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(word_vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    # TransformerLens rebuilds tokenizers from `name_or_path` unless they already add BOS.
    tokenizer.init_kwargs.update(name_or_path="headlab-word-tokenizer", add_bos_token=True)
    return tokenizer


def tiny_llama(
    config: TinyConfig = TinyConfig(),
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random-weight Llama (rotary, RMSNorm, grouped-query attention) with a word tokenizer."""
    tokenizer = word_tokenizer()
    hf_config = LlamaConfig(  # type: ignore[call-arg]  # @strict __init__ takes config **kwargs too
        vocab_size=len(tokenizer),
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.d_head,
        max_position_embeddings=config.n_ctx,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf_config.architectures = ["LlamaForCausalLM"]
    return seeded(config.seed, LlamaForCausalLM, hf_config).eval(), tokenizer


Model = TypeVar("Model")


def seeded(seed: int, model_class: Callable[[Any], Model], config: Any) -> Model:
    """`model_class(config)` with its random weights drawn under `seed`, leaving torch's global
    generator as it was (a test model never shifts the randomness of what runs after it)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return model_class(config)
    finally:
        torch.random.set_rng_state(state)


def vlm_text_config(tokenizer: Any, max_positions: int, **overrides: Any) -> LlamaConfig:
    """The text model of the tiny LLaVA and Idefics3: Llama, 2 layers of 4 heads (2 KV heads,
    head_dim 8, d_model 32), sized to `tokenizer`."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
