"""VHR and VAR on every image architecture headlab reads (LLaVA, Idefics3, Qwen2.5-VL, tiny
random instances): the neutral setting (α = 1, p = 1) generates exactly what the plain model
does, logits included; α = 2 and p = 0.6 change the logits. LLaVA's own, finer tests are in
test_vhr.py and test_visual_sinks.py (against the authors' code)."""

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
