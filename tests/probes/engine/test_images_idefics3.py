"""Image prompts through the engine on tiny-random-idefics3 (SmolVLM's architecture): the
bridge equal to Hugging Face's model on an image prompt, a saved checkpoint directory loaded by
path, divergence and visual sinks with planted heads whose answer is known, and the token boxes
checked against what each image token actually reads."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import headlab as hl
from probes import engine
from probes.core import schema
from probes.families.image_attention import ImageAttentionParams, ImageAttentionProbe
from probes.inputs.images import image_kwargs, patch_boxes
from probes.inputs.prompts import load_jsonl
from probes.models import load
from probes.models.vision_idefics3 import TINY_PREPROCESSOR, SplitProcessing, tiny_idefics3
from tests import planting
from tests.probes.engine.image_scans import IMAGE_PROMPTS, per_head, scan

VIEWS = 5  # every committed image is resized to 64 on its long side: 2 × 2 crops + global


@pytest.fixture(scope="module")
def idefics():
    return load("tiny-random-idefics3")


def test_tiny_idefics3_is_shaped_like_smolvlm(idefics):
    config = idefics.bridge.original_model.config
    assert idefics.provenance["architecture"] == "Idefics3ForConditionalGeneration"
    assert config.text_config.model_type == "llama" and config.scale_factor == 2
    assert idefics.vision.architecture == "idefics3" and idefics.vision.n_image_tokens is None
    assert idefics.vision.processing.image_seq_len == 16  # (32 / 4)² patches / 2²
    assert (idefics.info.n_layers, idefics.info.n_heads, idefics.info.n_kv_heads) == (2, 4, 2)


def test_image_prompt_tokens_equal_idefics3_processor_s(idefics):
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    keys = {k: v for k, v in TINY_PREPROCESSOR.items() if k != "image_processor_type"}
    processor = Idefics3Processor(
        Idefics3ImageProcessorPil(**keys), idefics.tokenizer, image_seq_len=16
    )
    suite = load_jsonl(IMAGE_PROMPTS)
    tokenized = {p.id: p for p in engine.tokenize_suite(idefics, suite, max_tokens=512)}
    for prompt in suite.prompts:
        reference = processor(images=[Image.open(prompt.image)], text=[prompt.text])
        expected = (idefics.info.bos_token_id, *reference["input_ids"][0])
        assert tokenized[prompt.id].tokens == expected, prompt.id
        assert expected.count(idefics.vision.image_token_id) == 16 * VIEWS


def image_prompt(model, image_path):
    from probes.inputs.images import tokenize_image_prompt
    from probes.inputs.prompts import Prompt

    prompt = Prompt("p", "look at <image> what is the color ?", image=Path(image_path))
    tokens = torch.tensor([tokenize_image_prompt(model, prompt, None, "p").tokens])
    return tokens, image_kwargs(model, [str(image_path)], tokens)


def test_the_bridge_s_logits_equal_the_hf_model_s_on_an_image_prompt(idefics):
    tokens, inputs = image_prompt(idefics, IMAGE_PROMPTS.parent / "blue_circle.png")
    assert inputs["pixel_values"].shape == (1, VIEWS, 3, 32, 32)
    hf_model = idefics.bridge.original_model
    with torch.inference_mode():
        bridge = idefics.bridge(tokens, **inputs)
        hf = hf_model(input_ids=tokens, **inputs).logits
        blank = hf_model(input_ids=tokens, **{**inputs, "pixel_values": -inputs["pixel_values"]})
    torch.testing.assert_close(bridge, hf)
    assert (blank.logits - hf).abs().max() > 1e-3  # the pixels reach the logits


def test_a_checkpoint_directory_loads_by_path_with_its_own_preprocessing(tmp_path):
    """The real-checkpoint path (as SmolVLM is saved): the model class from its config, its
    preprocessor config read as JSON, the tag ids from its tokenizer, the bridge equal to HF."""
    hf_model, tokenizer, _ = tiny_idefics3(seed=3)
    directory = tmp_path / "smolvlm"
    hf_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {**TINY_PREPROCESSOR, "size": {"longest_edge": 96}, "resample": 2}
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    model = load(str(directory))
    assert model.provenance["architecture"] == "Idefics3ForConditionalGeneration"
    expected = SplitProcessing(96, 32, 16, resample="bilinear")
    assert replace(model.vision.processing, tokens=None) == expected
    green = tmp_path / "green.png"
    Image.new("RGB", (70, 64), "green").save(green)
    tokens, inputs = image_prompt(model, green)
    assert inputs["pixel_values"].shape == (1, 3 * 3 + 1, 3, 32, 32)  # 96 × 88 → 96 × 96
    with torch.inference_mode():
        torch.testing.assert_close(
            model.bridge(tokens, **inputs), hf_model(input_ids=tokens, **inputs).logits
        )


def test_every_head_gets_vhd_and_visual_sink_rows(idefics):
    table = scan(idefics)
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    assert set(per_head(table, "vhd")) == heads
    assert set(per_head(table, "visual_sink_alpha")) == heads
    assert all(math.isfinite(v) and v > 0 for v in per_head(table, "vhd").values())
    sinks = table[table.metric == "visual_sink"]
    assert sorted(set(sinks.prompt)) == ["blue-circle", "green-stripes", "red-square"]
    assert (sinks.token == "<image>").all()  # only image tokens, never the tags around them


def test_a_head_that_never_reads_the_image_has_divergence_zero(idefics):
    plants = [
        planting.attend_to(0, 0, lambda q: q),  # itself: layer 0 sees its own token only
        planting.bos_head(0, 1),  # BOS, before the image in both variants
        planting.uniform_head(0, 2),  # averages over the image when it is there
    ]
    vhd = per_head(scan(idefics, plants=plants, probes=("divergence",)), "vhd")
    assert vhd[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 1)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 2)] > 100 * max(vhd[(0, 0)], vhd[(0, 1)], 1e-7)


def test_a_planted_visual_sink_is_found(idefics):
    # Position 6 is an image token in every committed prompt (the first crop's image tokens
    # start at 3 or 5, after the fake token and <row_1_col_1>).
    plants = [planting.attend_to(1, 2, lambda q: 6 if q >= 6 else 0)]
    table = scan(idefics, plants=plants, probes=("sink",))
    visual = per_head(table, "visual_sink_alpha")
    assert visual[(1, 2)] == pytest.approx(1.0, abs=1e-5)
    assert max(v for head, v in visual.items() if head != (1, 2)) < 0.5
    top = table[table.metric == "visual_sink"].sort_values("value").groupby("prompt").last()
    assert set(top.position) == {6}


def wide_prompts(tmp_path):
    image = Image.new("RGB", (97, 30), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 20, 29), fill=(10, 200, 30))
    image.save(tmp_path / "wide.png")
    line = {"id": "wide", "text": "look at <image> the answer is green", "image": "wide.png"}
    (tmp_path / "wide.jsonl").write_text(json.dumps(line) + "\n")
    return load_jsonl(tmp_path / "wide.jsonl")


def test_image_attention_stores_a_box_per_image_token_of_a_wide_image(idefics, tmp_path):
    # A head fixed on the first image token of the second crop (after BOS, look, at, the first
    # crop's fake, tag and 16 image tokens, its own fake and tag): position 3 + 18 + 2 = 21.
    probe = ImageAttentionProbe(idefics.info, ImageAttentionParams(n_prompts=1))
    with planting.planted(idefics, [planting.attend_to(1, 3, lambda q: 23 if q >= 23 else 0)]):
        engine.run(idefics, [probe], wide_prompts(tmp_path), progress=False)
    tables = probe.tables()
    weights = tables[schema.IMAGE_ATTENTION_TABLE]
    weights = weights[(weights.layer == 1) & (weights["head"] == 3)].weights.iloc[0]
    boxes = tables[schema.IMAGE_PROMPTS_TABLE].boxes.iloc[0]
    assert len(boxes["view"]) == len(weights) == 3 * 16  # 1 × 2 crops and the global view
    assert boxes["view"][::16] == ["crop 1,1", "crop 1,2", "global"]
    assert int(weights.argmax()) == 16
    assert [boxes[k][16] for k in ("x0", "y0", "x1", "y1")] == [0.5, 0.0, 0.625, 0.25]


def vision_only(seed=0):
    """tiny-random-idefics3 with no vision layers: an image token then reads exactly the
    patches the connector's pixel shuffle joins (no attention mixes them)."""
    from transformers import Idefics3ForConditionalGeneration

    hf_model, _, vision = tiny_idefics3(seed)
    config = hf_model.config
    config.vision_config.num_hidden_layers = 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Idefics3ForConditionalGeneration(config).eval(), vision


def test_each_image_token_reads_exactly_the_pixels_of_its_box():
    model, vision = vision_only()
    pixels = torch.zeros(1, 1, 3, 32, 32, requires_grad=True)
    features = model.model.get_image_features(pixels + 0.5).pooler_output[0]  # [16, d]
    boxes = patch_boxes(vision, 40, 40)[-16:]  # the global view's tokens (a square image)
    assert all(box.view == "global" for box in boxes)
    for token, box in enumerate(boxes):
        (grad,) = torch.autograd.grad(features[token].square().sum(), pixels, retain_graph=True)
        read = grad[0, 0].abs().sum(0) > 0  # [h, w]: the pixels this token depends on
        rows, columns = read.any(1).nonzero().flatten(), read.any(0).nonzero().flatten()
        assert [columns.min() / 32, rows.min() / 32] == [box.x0, box.y0], token
        assert [(columns.max() + 1) / 32, (rows.max() + 1) / 32] == [box.x1, box.y1], token
        assert read.sum() == (box.x1 - box.x0) * (box.y1 - box.y0) * 32 * 32  # all of it


def test_the_text_segment_variant_and_text_prompts_run_on_the_vlm(idefics):
    from probes.inputs.prompts import Prompt, PromptSuite

    suite = PromptSuite("t", (Prompt("t", "the cat <segment>went to the</segment> park and"),), "t")
    assert len(per_head(scan(idefics, suite, probes=("divergence",)), "vhd")) == 8
    texts = ["the cat went to the park and the dog", "mary gave the ball to john"]
    fast, bridge = (
        hl.scan(idefics, texts, probes=["sink"], path=path).set_index(["metric", "layer", "head"])
        for path in ("fast", "bridge")
    )
    alpha = ("alpha", slice(None), slice(None))
    assert (fast.loc[alpha].value - bridge.loc[alpha].value).abs().max() < 1e-5


def test_tiny_idefics3_names_take_a_seed():
    from probes.models import loading
    from probes.models.vision_architectures import tiny_architecture

    assert tiny_architecture("tiny-random-idefics3-7").tiny_name == "tiny-random-idefics3"
    assert loading.tiny_seed("tiny-random-idefics3-7", "tiny-random-idefics3") == 7
    weights = [next(tiny_idefics3(seed)[0].parameters()) for seed in (7, 7, 8)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_without_the_image_drops_its_wrapping_tokens_too(idefics):
    from probes.inputs.images import image_layout

    suite = load_jsonl(IMAGE_PROMPTS)
    layout = image_layout(idefics, suite.prompts[0], 3, None, "red-square")
    ids = idefics.vision.processing.tokens
    wrapping = {ids.fake, ids.global_tag, *ids.row_col.values(), idefics.vision.image_token_id}
    tags = {ids.row_col[(r, c)] for r in (1, 2) for c in (1, 2)}  # a 2 × 2 grid
    assert wrapping & set(layout.with_segment) == {ids.fake, ids.global_tag, *tags} | {
        idefics.vision.image_token_id
    }
    assert not wrapping & set(layout.without_segment)
    text = idefics.tokenize("look at") + idefics.tokenize(
        " what is the color of the thing ? the color is red", prepend_bos=False
    )
    assert layout.without_segment == tuple(text)
