import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from probes.engine.images import run_images
from probes.families.divergence import DivergenceParams, DivergenceProbe, SegmentError
from probes.inputs.images import (
    CLIP_MEAN,
    CLIP_STD,
    ImageInputs,
    ImagePrompt,
    image_layout,
    pixel_values,
)
from probes.models import wrap
from probes.models.tiny import word_tokenizer
from tests import planting


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A random 2-layer LLaVA (tiny CLIP tower, 4×4 patches of a 32-pixel image, GQA Llama),
    built from a config and booted from a local directory: no network, no weights."""
    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_seq_length=16,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    config._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    hf_model = LlavaForConditionalGeneration(config).eval()
    torch.random.set_rng_state(state)
    directory = tmp_path_factory.mktemp("tiny-llava")
    hf_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    model = wrap(hf_model, tokenizer, "tiny-llava", {"hf_id": str(directory)})
    return model, ImageInputs.llava(config)


def drawing(colour: str) -> Image.Image:
    image = Image.new("RGB", (48, 40), "white")
    ImageDraw.Draw(image).rectangle((8, 6, 30, 28), fill=colour)
    return image


PROMPTS = [
    ImagePrompt("red", "look at <image> the cat went to the park and the dog", drawing("red")),
    ImagePrompt("blue", "<image> mary gave the ball to john", drawing("blue")),
]


def run(tiny_llava, plants=()):
    model, inputs = tiny_llava
    probe = DivergenceProbe(model.info, DivergenceParams(answer_tokens=3, top_k=2))
    with planting.planted(model, plants):
        rows = run_images(model, probe, PROMPTS, inputs)
    vhd = rows[rows.metric == "vhd"]
    return rows, {(int(r.layer), int(r["head"])): r.value for _, r in vhd.iterrows()}


def test_pixel_values_of_a_plain_image_have_closed_form():
    inputs = ImageInputs(image_token_id=0, n_image_tokens=4, image_size=8)
    values = pixel_values(Image.new("RGB", (20, 13), (255, 0, 51)), inputs)
    assert values.shape == (1, 3, 8, 8)
    for channel, level in enumerate((1.0, 0.0, 0.2)):
        expected = (level - CLIP_MEAN[channel]) / CLIP_STD[channel]
        torch.testing.assert_close(values[0, channel], torch.full((8, 8), expected))


def test_layout_expands_the_placeholder_to_one_token_per_patch(tiny_llava):
    model, inputs = tiny_llava
    assert inputs.n_image_tokens == 16  # (32 / 8)², CLS dropped by the "default" strategy
    layout = image_layout(model, PROMPTS[1], inputs, answer_tokens=3)
    text = model.tokenize("mary gave the ball to john", prepend_bos=False)
    assert layout.with_segment == (model.info.bos_token_id, *[inputs.image_token_id] * 16, *text)
    assert layout.without_segment == (model.info.bos_token_id, *text)
    with pytest.raises(SegmentError, match=r"'x'.*found it 0 times"):
        image_layout(model, ImagePrompt("x", "no image here", drawing("red")), inputs, 3)


def test_a_head_that_never_reads_the_image_has_divergence_zero(tiny_llava):
    plants = [
        planting.attend_to(0, 0, lambda q: q),
        planting.bos_head(0, 1),
        planting.uniform_head(0, 2),
    ]
    rows, vhd = run(tiny_llava, plants)
    assert vhd[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 1)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 2)] > 100 * max(vhd[(0, 0)], vhd[(0, 1)], 1e-7)  # averages over the image
    t_vhd = rows[rows.metric == "t_vhd"]
    assert len(t_vhd) == 2 * 3 and (t_vhd.value > 0).all()


def test_the_image_content_changes_the_divergence(tiny_llava):
    _, with_drawings = run(tiny_llava)
    model, inputs = tiny_llava
    probe = DivergenceProbe(model.info, DivergenceParams(answer_tokens=3))
    blank = [ImagePrompt(p.id, p.text, Image.new("RGB", (48, 40), "white")) for p in PROMPTS]
    rows = run_images(model, probe, blank, inputs)
    blank_vhd = rows[rows.metric == "vhd"].value.to_numpy()
    drawn_vhd = np.array(list(with_drawings.values()))
    assert np.abs(blank_vhd - drawn_vhd).max() > 1e-3 * drawn_vhd.max()
