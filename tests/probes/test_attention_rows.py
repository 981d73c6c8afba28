"""Exact attention rows and their output (probes/attention_rows.py), against eager attention."""

import pytest
import torch

from probes import attention_rows
from probes.core.reductions import attention_entropy


def eager_rows(query, key, mask, scaling):
    """Reference: repeat KV heads, full score matrix, additive mask, fp32 softmax."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = query @ key.transpose(-1, -2) * scaling
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_pattern_rows_equal_eager_softmax_for_every_chunking(mask_kind, reused, dtype):
    """Also into one reused workspace (float32: softmax in place over the scores; bfloat16:
    scores and rows in two buffers), whose earlier rows each chunk overwrites."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 6, 11, 8, generator=generator)
    key = torch.randn(2, 3, 11, 8, generator=generator)  # GQA: 6 query heads on 3 KV heads
    causal = torch.ones(11, 11, dtype=torch.bool).tril()[None, None].expand(2, 1, 11, 11).clone()
    causal[1, :, :, 7:] = False  # padding keys of the second sequence
    causal[1, :, 7:, 0] = True  # (keep its padding rows non-empty, as sdpa masks do)
    reference = eager_rows(query, key, causal, 0.3)
    mask = {
        "none": None,
        "bool": causal,
        "float": torch.zeros(causal.shape).masked_fill(~causal, float("-inf")),
    }[mask_kind]
    if mask is None:  # a skipped mask means plainly causal, no padding
        reference = eager_rows(query, key, torch.ones(11, 11, dtype=torch.bool).tril(), 0.3)
    query, key = query.to(dtype), key.to(dtype)
    if dtype == torch.bfloat16:  # the reference from the same rounded inputs
        reference = eager_rows(query.float(), key.float(), causal if mask is not None else
                               torch.ones(11, 11, dtype=torch.bool).tril(), 0.3)  # fmt: skip
    workspace = attention_rows.Workspace() if reused else None
    tolerance = {} if dtype == torch.float32 else {"rtol": 0.02, "atol": 0.01}
    for step in (1, 4, 11):
        earlier = None
        for start in reversed(range(0, 11, step)):  # widest first: the buffers never grow
            stop = min(start + step, 11)
            rows = attention_rows.pattern_rows(
                query, key, mask, 0.3, start, stop, workspace=workspace
            )
            # Only the keys these queries can see come back; the reference is exactly 0 past them.
            assert rows.shape[-1] == stop and rows.dtype == torch.float32
            torch.testing.assert_close(rows, reference[:, :, start:stop, :stop], **tolerance)
            assert not reference[:, :, start:stop, stop:].any()
            if earlier is not None:  # a reused buffer: the last chunk's rows are gone
                assert (earlier.data_ptr() == rows.data_ptr()) == reused
            earlier = rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "softcap"])
def test_rows_with_entropy_are_the_same_rows_and_their_log_entropy(mask_kind, reused, dtype):
    """Scores up to ±60 (a sharp head): the entropy from the scores must not lose digits."""
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(2, 6, 13, 8, generator=generator) * 6
    key = torch.randn(2, 3, 13, 8, generator=generator).to(dtype)
    query = query.to(dtype)
    causal = torch.ones(13, 13, dtype=torch.bool).tril()[None, None].expand(2, 1, 13, 13).clone()
    causal[1, :, :, 9:] = False
    causal[1, :, 9:, 0] = True
    mask = {
        "none": None,
        "softcap": None,
        "bool": causal,
        "float": torch.zeros(causal.shape).masked_fill(~causal, float("-inf")),
    }[mask_kind]
    softcap = 5.0 if mask_kind == "softcap" else None
    plain, shared = attention_rows.Workspace(), attention_rows.Workspace() if reused else None
    for step in (1, 5, 13):
        for start in reversed(range(0, 13, step)):
            stop = min(start + step, 13)
            args = (query, key, mask, 0.3, start, stop, softcap)
            expected = attention_rows.pattern_rows(*args).clone()
            rows, entropy = attention_rows.pattern_rows_and_entropy(*args, workspace=shared)
            assert torch.equal(rows, expected)
            if reused:  # the rows buffer of a pattern_rows workspace is another use of it
                assert torch.equal(attention_rows.pattern_rows(*args, workspace=plain), expected)
            torch.testing.assert_close(entropy, attention_entropy(expected), rtol=0, atol=2e-6)


def test_entropy_of_planted_rows_uniform_one_hot_and_empty():
    """Equal scores: log(visible keys); one key far ahead of the rest: 0. (Rows over no key,
    padding under the fast path's mask, are checked in test_streaming_probes' padded batches.)"""
    n = 6
    query = torch.zeros(1, 2, n, 4)
    key = torch.zeros(1, 2, n, 4)
    query[0, 1] = 1.0
    key[0, 1, 2] = 1000.0  # head 1: every query that sees key 2 puts all its weight there
    _, entropy = attention_rows.pattern_rows_and_entropy(query, key, None, 1.0, 0, n)
    torch.testing.assert_close(entropy[0, 0], torch.arange(1, n + 1).float().log())
    assert torch.equal(entropy[0, 1, 2:], torch.zeros(n - 2))
    torch.testing.assert_close(entropy[0, 1, 1], torch.tensor(2.0).log())  # keys 0, 1 alike


def test_rows_times_values_matches_repeated_kv_matmul():
    generator = torch.Generator().manual_seed(1)
    rows = torch.rand(2, 6, 5, 9, generator=generator)
    value = torch.randn(2, 3, 12, 4, generator=generator)  # 3 values no row reaches
    expected = rows @ value[:, :, :9].repeat_interleave(2, dim=1)
    torch.testing.assert_close(attention_rows.rows_times_values(rows, value), expected)


def test_chunked_attention_hands_every_row_once_and_outputs_eager_attention():
    generator = torch.Generator().manual_seed(2)
    query = torch.randn(1, 4, 10, 8, generator=generator)
    key = torch.randn(1, 2, 10, 8, generator=generator)
    value = torch.randn(1, 2, 10, 8, generator=generator)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    reference = eager_rows(query, key, causal, 0.5)
    seen = []

    def on_rows(rows, q_start, k_start, entropy):
        seen.append(q_start)
        torch.testing.assert_close(
            rows, reference[:, :, q_start : q_start + rows.shape[2], : rows.shape[-1]]
        )
        torch.testing.assert_close(entropy, attention_entropy(rows))

    output = attention_rows.chunked_attention(
        query, key, value, None, 0.5, step=3, workspace=attention_rows.Workspace(),
        on_rows=on_rows, with_entropy=True,
    )  # fmt: skip
    assert seen == [0, 3, 6, 9]
    expected = reference @ value.repeat_interleave(2, dim=1)
    torch.testing.assert_close(output, expected)
