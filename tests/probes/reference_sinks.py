"""Test-only transcription of the authors' sink metric (sail-sg/Attention-Sink,
eval_sink_open_source.py, compute_attention_sink) and ACT's hidden-sink detection
(GATECH-EIC/ACT, models/llama_modelling_aug.py, atten_process_eval). Not used by the package."""

import torch


def authors_importance_scores(attention_scores: torch.Tensor) -> torch.Tensor:
    """(num_samples, num_layers, num_heads, T, T) -> (num_samples, num_layers, num_heads, T)."""
    num_samples, num_layers, num_heads, num_tokens1, num_tokens2 = attention_scores.shape
    ratios = (
        torch.arange(num_tokens1, 0, -1)[None, None, None, :]
        .expand(num_samples, num_layers, num_heads, num_tokens1, num_tokens2)
        .to(attention_scores)
    )
    return (attention_scores / ratios).sum(dim=-2)


def authors_sink_percentage(attention_scores: torch.Tensor, epsilon: float) -> torch.Tensor:
    importance_scores = authors_importance_scores(attention_scores)
    return (importance_scores > epsilon).to(torch.float).mean(dim=(0, 1, 2)) * 100


def act_sink_indices(head_map: torch.Tensor, threshold: float) -> torch.Tensor:
    """ACT's per-head detection on one (q_len, kv_len) map, before `indices[1:]`."""
    shape = head_map.shape[0]
    score = torch.sum(head_map, dim=0) / torch.arange(shape, 0, -1)
    return torch.nonzero(torch.where(score > threshold, 1, 0)).flatten()
