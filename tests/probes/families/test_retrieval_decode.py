"""The fused retrieval decode (SDPA prefill, last rows only) against eager attention and the
bridge path: same tokens, same top-1 keys, same scores."""

from __future__ import annotations

import pytest
import torch

from probes import bridge
from probes import decoding as decode
from probes.families.retrieval import RetrievalParams, TopKeyRecorder, choose_path, run_sample
from probes.families.retrieval_decode import last_row
from probes.inputs import niah
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
