"""Tensors tests build by hand."""

import torch


def random_causal_patterns(*shape: int, seed: int = 0) -> torch.Tensor:
    """Softmax of random scores under a causal mask: [..., T, T] with rows summing to 1."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=generator) * 3
    size = shape[-1]
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)
