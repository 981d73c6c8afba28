"""VHR and VAR on every image architecture headlab reads (LLaVA, Idefics3, Qwen2.5-VL, tiny
random instances): the neutral setting (α = 1, p = 1) generates exactly what the plain model
does, logits included; α = 2 and p = 0.6 change the logits. LLaVA's own, finer tests are in
test_vhr.py and test_visual_sinks.py (against the authors' code)."""

import contextlib
from pathlib import Path

import pytest
import torch

import headlab as hl
from analyses.interventions.kinds import hooks
from probes import bridge
from probes.core import hook_names
from probes.decoding import generate
from probes.inputs.images import prompt_image_inputs, tokenize_image_prompt
from probes.inputs.prompts import load_jsonl
from probes.models import load
from tests import planting

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
ARCHITECTURES = ["tiny-random-llava", "tiny-random-idefics3", "tiny-random-qwen2.5-vl"]
TINY_VAR = {"tau": 2.0, "first_layer": 0}  # τ = 20 is beyond a 32-wide model's RMS-normed values


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request):
    return load(request.param)


@pytest.fixture(scope="module")
def prompt(model):
    first = load_jsonl(IMAGE_PROMPTS).prompts[0]
    tokens = tokenize_image_prompt(model, first, None, first.id).tokens
    return tokens, first.image


def run(model, tokens, image, interventions=(), extra_hooks=()):
    inputs = prompt_image_inputs(model, image, tokens)
    fwd_hooks = [*extra_hooks, *hooks(list(interventions), model.info)]
    out = generate(model, tokens, image_inputs=inputs, max_new_tokens=4, keep_logits=True,
                   fwd_hooks=fwd_hooks)  # fmt: skip
    return out.tokens, out.logits


def test_vhr_at_alpha_1_is_the_identity_and_alpha_2_is_not(model, prompt):
    tokens, image = prompt
    clean_ids, clean_logits = run(model, tokens, image)
    heads = [(layer, 0) for layer in range(model.info.n_layers)]
    neutral = hl.vhr(model, heads, alpha=1.0).interventions
    ids, logits = run(model, tokens, image, neutral)
    assert ids == clean_ids and torch.equal(logits, clean_logits)
    _, reinforced = run(model, tokens, image, hl.vhr(model, heads, alpha=2.0).interventions)
    assert not torch.allclose(reinforced, clean_logits, atol=1e-4)


def plant_sink(position):
    """A massive value in dimension 0 of the image token at `position`, at layer 0's input
    (random weights have no visual sink of their own at the test τ)."""

    def hook(resid, hook):
        if resid.shape[1] > position:
            resid = resid.clone()
            resid[:, position, 0] = 80.0
        return resid

    return [(hook_names.block(0, "resid_pre"), hook)]


def test_var_at_p_1_is_the_identity_and_p_0_6_is_not(model, prompt):
    tokens, image = prompt
    image_positions = [i for i, t in enumerate(tokens) if t == model.vision.image_token_id]
    plant = plant_sink(image_positions[len(image_positions) // 2])
    with bridge.attached(model, plant):
        clean_ids, clean_logits = run(model, tokens, image)
        with pytest.warns(hl.NoEffectWarning, match="p = 1"):
            neutral = hl.var(model, tokens, image, p=1.0, dims=[0], **TINY_VAR)
            with neutral:
                ids, logits = run(model, tokens, image)
        assert neutral.interventions[0].heads  # a layer had a visual sink: VAR was armed
        assert ids == clean_ids and torch.equal(logits, clean_logits)
        redistributed = hl.var(model, tokens, image, p=0.6, dims=[0], **TINY_VAR)
        with redistributed:
            _, edited = run(model, tokens, image)
    assert redistributed.changed
    assert not torch.allclose(edited, clean_logits, atol=1e-5)


def test_var_leaves_qwen_s_vision_end_query_alone_and_edits_the_next_one():
    """A head spreading evenly over the image from <|vision_end|> and from the token after it,
    both image-centric (one of the image's tokens is the planted sink): only the latter is text
    after the image, so only its row is edited in the prefill."""
    qwen = load("tiny-random-qwen2.5-vl")
    first = load_jsonl(IMAGE_PROMPTS).prompts[0]
    tokens = tokenize_image_prompt(qwen, first, None, first.id).tokens
    image = [i for i, t in enumerate(tokens) if t == qwen.vision.image_token_id]
    marker = image[-1] + 1
    assert tokens[marker] == qwen.vision.processing.end_token_id
    spread = planting.attend_uniform(0, 0, lambda q: image if q in (marker, marker + 1) else [0])
    patterns = []

    def tap(pattern, hook):
        patterns.append(pattern[0, 0].detach().clone())

    name = hook_names.attn(0, "pattern")
    inputs = prompt_image_inputs(qwen, first.image, tokens)
    with bridge.attached(qwen, [*plant_sink(image[0]), spread]):
        var = hl.var(qwen, tokens, first.image, p=0.6, dims=[0], **TINY_VAR)
        for edit in (contextlib.nullcontext(), var):
            with edit, bridge.attached(qwen, [(name, tap)]):
                bridge.forward(qwen, torch.tensor([tokens]), return_type=None, **inputs)
    clean, edited = patterns
    assert edited[marker + 1, image[0]] == pytest.approx(0.6 / len(image), rel=1e-4)
    torch.testing.assert_close(edited[: marker + 1], clean[: marker + 1], rtol=0, atol=0)
