"""The fused retrieval decode (SDPA prefill, last rows only) against eager attention and the
bridge path: same tokens, same top-1 keys, same scores."""

from __future__ import annotations

import copy

import pytest
import torch

from probes import attention_rows, bridge
from probes import decoding as decode
from probes.families import retrieval_decode
from probes.families.retrieval import RetrievalParams, TopKeyRecorder, choose_path, run_sample
from probes.families.retrieval_decode import last_row, last_row_attention
from probes.inputs import niah
from probes.models import wrap
from probes.models.tiny import TinyConfig, tiny_llama
from tests.probes.families.test_retrieval import HAYSTACK, NEEDLE, TEMPLATE

pytestmark = pytest.mark.usefixtures("one_thread")


def eager_row(query, key, mask, scaling):
    """Eager attention's last row with the KV heads repeated, as transformers' eager path does."""
    repeated = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = query @ repeated.transpose(-1, -2) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1)


@pytest.mark.parametrize("masked", [False, True])
def test_last_row_equals_eager_attention_with_grouped_heads(masked):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 6, 1, 8, generator=generator)
    key = torch.randn(1, 2, 30, 8, generator=generator)
    mask = None
    if masked:  # a sliding window hides the first keys
        mask = torch.ones(1, 1, 1, 30, dtype=torch.bool)
        mask[..., :12] = False
    ours = last_row(query, key, mask, 8**-0.5)
    torch.testing.assert_close(ours, eager_row(query, key, mask, 8**-0.5), rtol=0, atol=1e-6)
    if masked:
        assert (ours[..., :12] == 0).all() and (ours[..., 12:] > 0).all()
    # Head 1 reads KV head 0, head 3 reads KV head 1: swapping the KV heads changes the rows.
    swapped = last_row(query, key.flip(1), mask, 8**-0.5)
    assert not torch.allclose(swapped, ours)


def old_last_row(query, key, attention_mask, scaling, softcap=None):
    """Test-only transcription of last_row before it used pattern_rows (its own masking)."""
    n_batch, n_heads, _, d_head = query.shape
    n_kv, n_keys = key.shape[1], key.shape[-2]
    grouped = (query * scaling).reshape(n_batch, n_kv, n_heads // n_kv, d_head)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).view(n_batch, n_heads, 1, n_keys)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :n_keys]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def old_step_output(rows, value):
    """Test-only transcription of the step output before it used rows_times_values."""
    n_heads, n_kv = rows.shape[1], value.shape[1]
    grouped = rows.to(value.dtype).reshape(1, n_kv, n_heads // n_kv, rows.shape[-1])
    output = torch.matmul(grouped, value).view(1, n_heads, 1, value.shape[-1])
    return output.transpose(1, 2).contiguous()


class _Layer(torch.nn.Module):
    layer_idx = 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_last_row_is_bit_identical_to_its_old_formula(mask_kind, softcap, dtype):
    """Rows and step output through pattern_rows / rows_times_values equal the old inline code
    exactly, on GQA inputs; the mask is wider than the cache, as SDPA's can be."""
    generator = torch.Generator().manual_seed(2)
    query = (torch.randn(1, 6, 1, 16, generator=generator) * 3).to(dtype)
    key = torch.randn(1, 2, 40, 16, generator=generator).to(dtype)
    value = torch.randn(1, 2, 40, 16, generator=generator).to(dtype)
    visible = torch.ones(1, 1, 1, 44, dtype=torch.bool)
    visible[..., :9] = False  # a window hides the first keys
    visible[..., 40:] = False  # past the cache: must be sliced off, not read
    mask = {
        "none": None,
        "bool": visible,
        "additive": torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, float("-inf")),
    }[mask_kind]
    old = old_last_row(query, key, mask, 0.25, softcap)
    rows = last_row(query, key, mask, 0.25, softcap)
    assert rows.dtype == torch.float32 and torch.equal(rows, old)
    assert ((rows[..., :9] == 0).all()) == (mask is not None)  # the mask was applied
    if softcap is not None:  # and the softcap: without it the rows differ
        assert not torch.equal(rows, old_last_row(query, key, mask, 0.25))
    seen = []
    listening = retrieval_decode._SINK.set(lambda *step: seen.append(step))
    try:
        output, _ = last_row_attention(
            _Layer(), query, key, value, mask, scaling=0.25, softcap=softcap
        )
    finally:
        retrieval_decode._SINK.reset(listening)
    assert torch.equal(output, old_step_output(old, value))
    ((layer, top, n_keys),) = seen
    assert layer == 3 and n_keys == 40 and torch.equal(top, old[0, :, 0].argmax(-1))


def test_fused_and_bridge_decodes_give_the_same_keys(tiny_model, monkeypatch):
    """Every step's top-1 key per head, not only the (possibly all-zero) hit counts."""
    sample = niah.NiahBuilder(tiny_model, HAYSTACK, TEMPLATE).sample(NEEDLE, 80, 50)
    original = TopKeyRecorder.keys
    seen: dict[str, list[torch.Tensor]] = {"bridge": [], "fused": []}
    for path, keys in seen.items():

        def spy(self, n_positions, keys=keys):
            keys.append(original(self, n_positions).clone())
            return keys[-1]

        monkeypatch.setattr(TopKeyRecorder, "keys", spy)
        run_sample(tiny_model, sample, max_new_tokens=12, stop=lambda t: False, path=path)
    assert len(seen["fused"]) == len(seen["bridge"]) == 12
    for fused, through_bridge in zip(seen["fused"], seen["bridge"], strict=True):
        assert torch.equal(fused, through_bridge)
    assert len({tuple(k.flatten().tolist()) for k in seen["fused"]}) > 1  # keys move


def test_auto_takes_the_bridge_when_hooks_are_attached(tiny_model):
    assert choose_path(tiny_model, "auto") == "fused"
    assert choose_path(tiny_model, "auto", hooked=True) == "bridge"
    hook = ("blocks.0.attn.hook_pattern", lambda pattern, hook: None)
    with bridge.attached(tiny_model, [hook]):
        assert choose_path(tiny_model, "auto") == "bridge"
        with pytest.raises(niah.NiahError, match="path='fused': hooks are attached"):
            choose_path(tiny_model, "fused")


def test_an_unknown_path_is_refused():
    with pytest.raises(niah.NiahError, match=r"RetrievalParams.path must be one of"):
        RetrievalParams(path="eager").check()


@pytest.mark.slow
def test_fused_decode_equals_the_bridge_on_smollm2(smollm2):
    builder = niah.NiahBuilder(smollm2, niah.load_haystack(niah.STDLIB_DOCS))
    sample = builder.sample(niah.load_needles(niah.DEFAULT_NEEDLES)[0], 256, 50)
    stop = decode.StopRule(smollm2.tokenizer)
    through_bridge = run_sample(smollm2, sample, max_new_tokens=20, stop=stop, path="bridge")
    fused = run_sample(smollm2, sample, max_new_tokens=20, stop=stop, path="fused")
    assert fused.generated == through_bridge.generated
    assert fused.recall == through_bridge.recall > 0
    assert torch.equal(fused.hits, through_bridge.hits)
    assert fused.hits.sum() > 0  # some head copied from the needle


@pytest.mark.parametrize("seed", [0, 6])
def test_the_benchmarks_generate_matches_a_fused_decode_that_ends_on_eos(seed):
    """benchmarks/retrieval_decode.py's `generate` once asked for min_new_tokens, which bans EOS
    until then: where the fused decode stopped on EOS, generate took the runner-up instead."""
    from benchmarks.retrieval_decode import hf_greedy

    hf_model, tokenizer = tiny_llama(TinyConfig(seed=seed))
    reference = copy.deepcopy(hf_model)
    model = wrap(hf_model, tokenizer, f"tiny-random-{seed}")
    sample = niah.NiahBuilder(model, HAYSTACK, TEMPLATE).sample(NEEDLE, 60, 50)
    free = run_sample(model, sample, max_new_tokens=8, stop=lambda t: False, path="fused")
    eos = free.generated[5]  # plant an EOS: the token the decode makes at step 5 (or before)
    reference.generation_config.eos_token_id = eos
    fused = run_sample(model, sample, max_new_tokens=8, stop=lambda t: t == eos, path="fused")
    assert fused.generated[-1] == eos and len(fused.generated) <= 6
    tokens, logits = hf_greedy(reference, sample.tokens, len(fused.generated), pad=0)
    assert tokens == list(fused.generated)
    assert len(logits) == len(tokens) and int(logits[-1].argmax()) == eos


@pytest.mark.slow
def test_fused_decode_equals_the_bridge_on_gemma_past_its_sliding_window(monkeypatch):
    """Gemma 3's sliding layers (window 512) prefill through exact rows over the window, its
    global layers through SDPA; the bridge runs eager attention throughout. Every step's top-1
    key per head must agree (this model restates the question, so its hits are all 0)."""
    from probes.models import load

    gemma = load("gemma-3-270m")
    builder = niah.NiahBuilder(gemma, niah.load_haystack(niah.STDLIB_DOCS))
    sample = builder.sample(niah.load_needles(niah.DEFAULT_NEEDLES)[0], 700, 50)
    stop = decode.StopRule(gemma.tokenizer)
    original, chunked = TopKeyRecorder.keys, attention_rows.chunked_attention
    windows: list[int | None] = []
    monkeypatch.setattr(
        attention_rows,
        "chunked_attention",
        lambda *args, **kwargs: windows.append(args[3].window) or chunked(*args, **kwargs),
    )
    seen: dict[str, list[torch.Tensor]] = {"bridge": [], "fused": []}
    outcomes = {}
    for path, keys in seen.items():

        def spy(self, n_positions, keys=keys):
            keys.append(original(self, n_positions).clone())
            return keys[-1]

        monkeypatch.setattr(TopKeyRecorder, "keys", spy)
        outcomes[path] = run_sample(gemma, sample, max_new_tokens=8, stop=stop, path=path)
    assert outcomes["fused"].generated == outcomes["bridge"].generated
    assert len(seen["fused"]) == len(seen["bridge"]) == 8
    for fused, through_bridge in zip(seen["fused"], seen["bridge"], strict=True):
        assert torch.equal(fused, through_bridge)
    assert windows == [512] * 15  # the prefill's 15 sliding layers (of 18) took exact rows
