"""Plant known attention behaviour in a model's heads, so metrics have an exact right answer.

A planting hook overwrites one head's pre-softmax scores (`hook_attn_scores`), so the softmax
that follows produces exactly the pattern we want and every later hook (the probes') sees it.
Register planting hooks before probe hooks on the same hook point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from probes.core import hook_names as hooks

BIG = 1e4  # a score gap that makes softmax put all mass on the chosen key (exp(-1e4) == 0)


def _plant(layer: int, head: int, make_scores: Callable[[int, int], torch.Tensor]):
    def hook(scores: torch.Tensor, hook) -> torch.Tensor:
        q_len, k_len = scores.shape[-2:]
        planted = make_scores(q_len, k_len).to(scores)
        causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        planted = planted.masked_fill(~causal, torch.finfo(scores.dtype).min)
        scores = scores.clone()
        scores[:, head] = planted
        return scores

    return (hooks.attn(layer, "attn_scores"), hook)


def bos_head(layer: int, head: int):
    """All attention on position 0."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        scores = torch.zeros(q_len, k_len)
        scores[:, 0] = BIG
        return scores

    return _plant(layer, head, make)


def bos_heavy_head(layer: int, head: int, gap: float = 6.0):
    """Most attention on position 0 (score `gap` above the rest), a little on every other key."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        scores = torch.zeros(q_len, k_len)
        scores[:, 0] = gap
        return scores

    return _plant(layer, head, make)


def uniform_head(layer: int, head: int):
    """Uniform attention over every visible key."""
    return _plant(layer, head, lambda q_len, k_len: torch.zeros(q_len, k_len))


def previous_token_head(layer: int, head: int):
    """Attention on the previous token (position 0 attends to itself)."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        offset = k_len - q_len
        scores = torch.zeros(q_len, k_len)
        for query in range(q_len):
            absolute = query + offset
            scores[query, max(absolute - 1, 0)] = BIG
        return scores

    return _plant(layer, head, make)


def attend_to(layer: int, head: int, key_of_query: Callable[[int], int]):
    """Each query (absolute position q) attends only to key `key_of_query(q)` (must be ≤ q)."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        offset = k_len - q_len
        scores = torch.zeros(q_len, k_len)
        for query in range(q_len):
            scores[query, key_of_query(query + offset)] = BIG
        return scores

    return _plant(layer, head, make)


def attend_uniform(layer: int, head: int, keys_of_query: Callable[[int], Sequence[int]]):
    """Each query (absolute position q) spreads its attention evenly over `keys_of_query(q)`
    (all ≤ q, at least one)."""

    def make(q_len: int, k_len: int) -> torch.Tensor:
        offset = k_len - q_len
        scores = torch.zeros(q_len, k_len)
        for query in range(q_len):
            scores[query, list(keys_of_query(query + offset))] = BIG
        return scores

    return _plant(layer, head, make)


def word_haystack(words: Sequence[str], n_sentences: int = 80, seed: int = 0) -> str:
    """Sentences of 5–9 random `words`, each ending in " ." (a haystack for word tokenizers)."""
    generator = torch.Generator().manual_seed(seed)

    def pick(n: int) -> list[str]:
        return [words[int(i)] for i in torch.randint(0, len(words), (n,), generator=generator)]

    lengths = torch.randint(5, 10, (n_sentences,), generator=generator).tolist()
    return " ".join(" ".join([*pick(n), "."]) for n in lengths)


def emit(tokens: Sequence[int]):
    """Greedy decoding emits `tokens` in order, one per single-position logits call, by raising
    their logit; a multi-position call (a full-logits prefill) restarts the sequence. Make one per
    decode and keep it out of `decode.prefill`, whose logits are its last position's only."""
    state = {"step": 0}

    def hook(logits: torch.Tensor, hook) -> torch.Tensor:
        if logits.shape[1] != 1:
            state["step"] = 0
            return logits
        step = state["step"]
        state["step"] += 1
        if step >= len(tokens):
            return logits
        logits = logits.clone()
        logits[:, -1, tokens[step]] = logits[:, -1].max() + BIG
        return logits

    return (hooks.logits(), hook)


@contextmanager
def planted(model, plants: Sequence[tuple[str, Callable]]) -> Iterator[None]:
    """Keep `plants` active around a whole `engine.run` (its per-batch hooks nest inside)."""
    with model.bridge.hooks(fwd_hooks=list(plants)):
        yield


# --- a tiny model whose one head carries a task --------------------------------------------

COPY_KEYS = ("red", "blue", "green", "cat", "dog", "house", "book", "ball")
COPY_FILLERS = ("the", "a", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on")


def copy_task_model(task_head: tuple[int, int] = (0, 1), seed: int = 0):
    """tiny-random rewired so that head `task_head` (layer 0) alone copies the key word at
    position 1 to the last position: it attends to the key (a content match on the slowest
    rotary pair, so it works at any position) and writes the key's identity into residual
    dims 0..7, which the unembedding of the key words reads. Its GQA sibling shares its K/V.
    Every other head and MLP keeps random weights, scaled up so that they matter.
    Returns (LoadedModel, pairs) with pairs = [(id, text, correct, incorrect), ...].
    """
    from probes.models import wrap
    from probes.models.tiny import TinyConfig, tiny_llama

    layer, head = task_head
    config = TinyConfig(seed=seed)
    hf_model, tokenizer = tiny_llama(config)
    d_head, n_keys, marker = config.d_head, len(COPY_KEYS), len(COPY_KEYS)
    kv = head // (config.n_heads // config.n_kv_heads)
    generator = torch.Generator().manual_seed(seed)
    keys = [tokenizer.convert_tokens_to_ids(word) for word in COPY_KEYS]
    with torch.no_grad():
        for name, parameter in hf_model.named_parameters():
            if parameter.ndim == 2 and "embed" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
        embed = hf_model.model.embed_tokens.weight
        embed.copy_(torch.randn(embed.shape, generator=generator))
        embed[:, : marker + 1] = 0
        embed[:, marker] = 1.0  # a constant the task head's query reads
        for index, token in enumerate(keys):
            embed[token, index] = 3.0
        attn = hf_model.model.layers[layer].self_attn
        q_rows = slice(head * d_head, (head + 1) * d_head)
        k_rows = slice(kv * d_head, (kv + 1) * d_head)
        slow = d_head // 2 - 1  # rotary pair (slow, slow + d_head/2) turns 1e-3 rad per token
        attn.q_proj.weight[q_rows] = 0
        attn.q_proj.weight[head * d_head + slow, marker] = 10.0
        attn.k_proj.weight[kv * d_head + slow] = 0
        attn.k_proj.weight[kv * d_head + slow + d_head // 2] = 0
        attn.k_proj.weight[kv * d_head + slow, :n_keys] = 10.0
        attn.v_proj.weight[k_rows] = 0
        attn.v_proj.weight[k_rows, :n_keys] = torch.eye(n_keys, d_head).T
        attn.o_proj.weight[:, q_rows] = 0
        attn.o_proj.weight[:n_keys, q_rows] = 10.0 * torch.eye(n_keys, d_head)
        unembed = hf_model.lm_head.weight
        for index, token in enumerate(keys):
            unembed[token] = 0
            unembed[token, index] = 1.0
    model = wrap(hf_model, tokenizer, f"copy-task-L{layer}H{head}")
    pairs = []
    for index in range(16):
        key = index % n_keys
        n_fill = 12 + int(torch.randint(0, 8, (1,), generator=generator))
        fill = [
            COPY_FILLERS[int(i)]
            for i in torch.randint(0, len(COPY_FILLERS), (n_fill,), generator=generator)
        ]
        text = " ".join([COPY_KEYS[key], *fill])
        pairs.append((f"copy-{index:02d}", text, COPY_KEYS[key], COPY_KEYS[(key + 3) % n_keys]))
    return model, pairs
