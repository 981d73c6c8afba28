"""VAR (analyses.interventions.visual_sinks): the edited pattern against the test-only
transcription of the authors' attn_redist, and generation on tiny-random-llava: p = 1 is the
identity, p = 0.6 changes the logits. tiny-random-llava has d_model = 32, so RMS-normed values
stay under √32 ≈ 5.7 and τ = 20 never fires: these tests give τ = 2 and first_layer = 0."""

from pathlib import Path

import pytest
import torch

import headlab as hl
from analyses.interventions.visual_sinks import (
    VisualAttentionRedistribution,
    find_visual_sinks,
    var_pattern,
)
from probes import bridge
from probes.core import hook_names
from probes.engine import tokenize_suite
from probes.inputs.images import prompt_image_inputs
from probes.inputs.prompts import load_jsonl
from probes.models import load
from tests.probes import reference_var as ref

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
TINY = {"tau": 2.0, "first_layer": 0}
SINK = 8  # the image token given a massive value in the BOS's sink dimension (19)


def plant_visual_sink(resid, hook):
    """The prefill's image token SINK gets a massive value in dimension 19 at layer 0's input
    (the random model has none: above τ = 2 there only the BOS is)."""
    if resid.shape[1] > SINK:
        resid = resid.clone()
        resid[:, SINK, 19] = 50.0
    return resid


PLANT = [(hook_names.block(0, "resid_pre"), plant_visual_sink)]


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


@pytest.fixture(scope="module")
def prompt(llava):
    tokenized = tokenize_suite(llava, load_jsonl(IMAGE_PROMPTS), max_tokens=256)[0]
    return list(tokenized.tokens), tokenized.image


def random_pattern(seed, heads=4, q=14, k=14):
    scores = torch.randn(1, heads, q, k, generator=torch.Generator().manual_seed(seed)) * 2
    causal = torch.ones(q, k, dtype=torch.bool).tril(k - q)
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decoding", [False, True])
def test_the_edited_pattern_is_the_authors_attn_redist(seed, decoding):
    im, stop = 2, 10
    pattern = random_pattern(seed)
    if decoding:  # one query (a decoding step) after the image
        pattern = pattern[:, :, -1:]
    massive = torch.tensor([0, 3, 6, 12])  # BOS, two visual sinks, a text token
    keys = torch.arange(14)
    is_massive, is_image = torch.isin(keys, massive), (keys >= im) & (keys < stop)
    for p, rho, summ in ((0.6, 0.5, 0.2), (0.0, 0.7, 0.1), (0.3, 0.9, 0.0)):
        ours = var_pattern(pattern, is_massive, is_image, p, rho, summ, queries_from=stop)
        coords = ref.head_fork(pattern, massive, im, stop - im, rho, summ)
        theirs = ref.attn_redist(pattern.clone(), coords, massive, im, stop - im, p, not decoding)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.sum(-1), torch.ones_like(ours.sum(-1)))
    changed = var_pattern(pattern, is_massive, is_image, 0.6, 0.9, 0.0, queries_from=stop)
    assert not torch.equal(changed, pattern)  # the comparison above is not of two identities


def greedy(model, tokens, image, steps=4, edit=None):
    """A small greedy loop on the bridge with its KV cache; the logits of every step."""
    ids = torch.tensor([tokens])
    context = edit if edit is not None else torch.no_grad()
    out, all_logits = [], []
    with context:
        logits, cache = bridge.forward(model, ids, return_type="logits_and_cache",
                                       **prompt_image_inputs(model, image, tokens))  # fmt: skip
        for _ in range(steps):
            all_logits.append(logits[:, -1])
            token = logits[:, -1].argmax(-1)
            out.append(int(token))
            logits, cache = bridge.forward(model, token[:, None], return_type="logits_and_cache",
                                           past_key_values=cache)  # fmt: skip
    return out, torch.cat(all_logits)


def test_tiny_llava_has_visual_sinks_at_the_test_tau(llava, prompt):
    tokens, image = prompt
    unplanted = find_visual_sinks(llava, tokens, image, **TINY)
    assert unplanted.image == tuple(range(3, 19))  # BOS and two text tokens, then 16 image tokens
    assert unplanted.dims == ((0, (19,)), (1, (19,)))  # the BOS's one value above τ = 2
    assert not any(unplanted.visual(layer) for layer in range(2))
    with bridge.attached(llava, PLANT):
        found = find_visual_sinks(llava, tokens, image, **TINY)
    assert found.visual(0) == (SINK,)
    assert 0 in dict(found.massive)[0]  # the BOS is a (text) sink token too
    at_paper_tau = find_visual_sinks(llava, tokens, image, first_layer=0)  # τ = 20 > √32: none
    assert all(not massive for _, massive in at_paper_tau.massive)


def test_p_1_is_the_identity_on_generation(llava, prompt):
    tokens, image = prompt
    with bridge.attached(llava, PLANT):
        assert VisualAttentionRedistribution.on(
            find_visual_sinks(llava, tokens, image, **TINY), 4
        ).heads
        clean_ids, clean_logits = greedy(llava, tokens, image)
        with pytest.warns(hl.NoEffectWarning, match="p = 1"):
            edit = hl.var(llava, tokens, image, p=1.0, **TINY)
            ids, logits = greedy(llava, tokens, image, edit=edit)
    assert ids == clean_ids
    assert torch.equal(logits, clean_logits)
    assert edit.calls > 0  # the edit ran, on the prefill and every decoding step


def test_without_a_visual_sink_token_var_edits_no_head(llava, prompt):
    tokens, image = prompt  # unplanted: above τ = 2 only the BOS is massive, no image token
    clean_ids, clean_logits = greedy(llava, tokens, image)
    with pytest.warns(hl.NoEffectWarning, match="no heads"):
        ids, logits = greedy(llava, tokens, image, edit=hl.var(llava, tokens, image, **TINY))
    assert ids == clean_ids
    assert torch.equal(logits, clean_logits)


def test_p_0_6_changes_the_generated_logits(llava, prompt):
    tokens, image = prompt
    with bridge.attached(llava, PLANT):
        _, clean_logits = greedy(llava, tokens, image)
        applied = hl.var(llava, tokens, image, p=0.6, **TINY)
        assert isinstance(applied.interventions[0], VisualAttentionRedistribution)
        _, logits = greedy(llava, tokens, image, edit=applied)
    assert applied.changed
    assert not torch.allclose(logits, clean_logits, atol=1e-4)


def test_in_the_model_the_edited_pattern_is_the_authors_on_every_pass(llava, prompt):
    """Layer 0's pattern before and after VAR, at the prefill and each decoding step."""
    tokens, image = prompt
    before, after = [], []
    name = hook_names.attn(0, "pattern")

    def tap(store):
        def hook(pattern, hook):
            store.append(pattern.detach().clone())

        return hook

    with bridge.attached(llava, [*PLANT, (name, tap(before))]):
        found = find_visual_sinks(llava, tokens, image, **TINY)
        applied = hl.var(llava, tokens, image, p=0.6, **TINY)
        before.clear()  # the two passes that found the sinks
        with applied, bridge.attached(llava, [(name, tap(after))]):
            greedy(llava, tokens, image, steps=3)
    massive = torch.tensor(dict(found.massive)[0])
    (start, stop), n_changed = (found.image[0], found.image[-1] + 1), 0
    assert len(before) == len(after) == 4  # the prefill and 3 decoding steps
    for step, (clean, edited) in enumerate(zip(before, after, strict=True)):
        coords = ref.head_fork(clean, massive, start, stop - start, 0.5, 0.2)
        theirs = ref.attn_redist(
            clean.clone(), coords, massive, start, stop - start, 0.6, step == 0
        )
        torch.testing.assert_close(edited, theirs, rtol=0, atol=1e-6)
        torch.testing.assert_close(edited.sum(-1), torch.ones_like(edited.sum(-1)))
        n_changed += not torch.equal(edited, clean)
    assert n_changed > 0
