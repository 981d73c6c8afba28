"""`probes.decoding.generate`: greedy generation equals Hugging Face `generate(do_sample=False)`,
for an image prompt on tiny-random-llava and a text prompt on tiny-random; it stops at EOS."""

from pathlib import Path

import pytest
import torch

from probes import bridge
from probes.decoding import generate
from probes.inputs.images import prompt_image_inputs, tokenize_image_prompt
from probes.inputs.prompts import load_jsonl
from probes.models import load
from tests import planting

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


def hf_greedy(model, tokens, n, **inputs):
    ids = torch.tensor([list(tokens)])
    with torch.inference_mode():
        out = bridge.hf_model(model).generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=n, **inputs,
        )  # fmt: skip
    return tuple(out[0, ids.shape[1] :].tolist())


def test_image_prompts_generate_what_hugging_face_generates(llava):
    for prompt in load_jsonl(IMAGE_PROMPTS).prompts:
        tokens = tokenize_image_prompt(llava, prompt, None, prompt.id).tokens
        inputs = prompt_image_inputs(llava, prompt.image, tokens)
        ours = generate(llava, tokens, image_inputs=inputs, max_new_tokens=8, keep_logits=True)
        assert ours.tokens == hf_greedy(llava, tokens, 8, **inputs)
        assert ours.logits is not None and ours.logits.shape == (8, len(llava.tokenizer))
        assert ours.logits.argmax(-1).tolist() == list(ours.tokens)


def test_the_image_changes_the_generation(llava):
    """Negative control for the comparison above: the text without its image gives other
    logits, so the pixels do reach the generation."""
    prompt = load_jsonl(IMAGE_PROMPTS).prompts[0]
    tokens = tokenize_image_prompt(llava, prompt, None, prompt.id).tokens
    inputs = prompt_image_inputs(llava, prompt.image, tokens)
    with_image = generate(llava, tokens, image_inputs=inputs, max_new_tokens=4, keep_logits=True)
    text_only = [t for t in tokens if t != llava.vision.image_token_id]
    without = generate(llava, text_only, max_new_tokens=4, keep_logits=True)
    assert not torch.allclose(with_image.logits[0], without.logits[0])


def test_text_prompts_generate_what_hugging_face_generates(tiny_model):
    tokens = tiny_model.tokenize("the cat went to the park and the dog")
    assert generate(tiny_model, tokens, max_new_tokens=6).tokens == hf_greedy(tiny_model, tokens, 6)


def test_generation_stops_after_eos(tiny_model):
    tokens = tiny_model.tokenize("the cat went to the park")
    eos = tiny_model.tokenizer.eos_token_id
    # generate's hooks act on the prefill too, whose one-position logits take emit's first step
    with planting.planted(tiny_model, [planting.emit([0, 5, 7, eos, 9])]):
        out = generate(tiny_model, tokens, max_new_tokens=10)
    assert out.tokens == (5, 7, eos)
    assert out.sequence == (*tokens, 5, 7, eos)


@pytest.mark.parametrize("name", ["tiny-random-idefics3", "tiny-random-qwen2.5-vl"])
def test_every_image_architecture_generates_what_hugging_face_generates(name):
    """Idefics3's crops and pixel mask, Qwen2.5-VL's grid and 3-D positions go to the prefill,
    and the decoding steps continue where Hugging Face's own generate does."""
    model = load(name)
    for prompt in load_jsonl(IMAGE_PROMPTS).prompts:
        tokens = tokenize_image_prompt(model, prompt, None, prompt.id).tokens
        inputs = prompt_image_inputs(model, prompt.image, tokens)
        ours = generate(model, tokens, image_inputs=inputs, max_new_tokens=6)
        assert ours.tokens == hf_greedy(model, tokens, 6, **inputs)
