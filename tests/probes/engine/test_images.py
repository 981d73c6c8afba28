"""Image prompts through the engine on tiny-random-llava: divergence with vs without the image
(the VHD paper's segment) and visual sink tokens, with planted heads whose answer is known."""

import json
import math

import pytest

import headlab as hl
from probes.core.errors import ConfigError
from probes.inputs.prompts import Prompt, PromptSuite, load_jsonl
from probes.models import load
from tests import planting
from tests.probes.engine.image_scans import IMAGE_PROMPTS, per_head, scan


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


def test_tiny_llava_is_shaped_like_llava_1_5(llava):
    assert llava.provenance["architecture"] == "LlavaForConditionalGeneration"
    assert llava.vision.n_image_tokens == 16  # (56 / 14)² patches, CLS dropped
    assert llava.vision.processing.crop_height == 56
    assert (llava.info.n_layers, llava.info.n_heads, llava.info.n_kv_heads) == (2, 4, 2)


def test_image_tokens_stand_where_the_placeholder_was(llava):
    from probes.engine import tokenize_suite

    suite = load_jsonl(IMAGE_PROMPTS)
    tokenized = {p.id: p for p in tokenize_suite(llava, suite, max_tokens=256)}
    blue = tokenized["blue-circle"]
    text = llava.tokenize(" what is the color of the thing ? the color is blue", False)
    image = [llava.vision.image_token_id] * 16
    assert blue.tokens == (llava.info.bos_token_id, *image, *text)
    assert blue.image == str(IMAGE_PROMPTS.parent / "blue_circle.png")


def test_every_head_gets_vhd_and_visual_sink_rows(llava):
    table = scan(llava)
    heads = {(layer, head) for layer in range(2) for head in range(4)}
    assert set(per_head(table, "vhd")) == heads
    assert set(per_head(table, "visual_sink_alpha")) == heads
    assert all(math.isfinite(v) and v > 0 for v in per_head(table, "vhd").values())
    sinks = table[table.metric == "visual_sink"]
    assert sorted(sinks.groupby("prompt").size().items()) == [
        ("blue-circle", 3),
        ("green-stripes", 3),
        ("red-square", 3),
    ]
    assert (sinks.token == "<image>").all()
    t_vhd = table[table.metric == "t_vhd"]
    assert set(t_vhd.prompt) == {"red-square", "blue-circle", "green-stripes"}


def test_a_head_that_never_reads_the_image_has_divergence_zero(llava):
    plants = [
        planting.attend_to(0, 0, lambda q: q),  # itself: layer 0 sees its own token only
        planting.bos_head(0, 1),  # BOS, before the image in both variants
        planting.uniform_head(0, 2),  # averages over the image tokens when they are there
    ]
    vhd = per_head(scan(llava, plants=plants, probes=("divergence",)), "vhd")
    assert vhd[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 1)] == pytest.approx(0.0, abs=1e-5)
    assert vhd[(0, 2)] > 100 * max(vhd[(0, 0)], vhd[(0, 1)], 1e-7)


def test_two_prompts_identical_but_for_the_image_diverge_differently(llava, tmp_path):
    images = IMAGE_PROMPTS.parent
    text = "look at <image> what is the color of the thing ? the color is red"
    tables = {}
    for name in ("red_square", "blank"):
        line = {"id": "p", "text": text, "image": str(images / f"{name}.png")}
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(line) + "\n")
        tables[name] = per_head(scan(llava, path, probes=("divergence",)), "vhd")
    difference = max(abs(tables["red_square"][h] - tables["blank"][h]) for h in tables["blank"])
    assert difference > 1e-3 * max(tables["blank"].values())


def test_a_planted_visual_sink_is_found(llava):
    # Position 5 is an image token in every committed prompt (the image starts at 1 or 3).
    plants = [planting.attend_to(1, 2, lambda q: 5 if q >= 5 else 0)]
    table = scan(llava, plants=plants, probes=("sink",))
    visual = per_head(table, "visual_sink_alpha")
    assert visual[(1, 2)] == pytest.approx(1.0, abs=1e-5)
    assert max(v for head, v in visual.items() if head != (1, 2)) < 0.5  # random heads spread
    top = table[table.metric == "visual_sink"].sort_values("value").groupby("prompt").last()
    assert set(top.position) == {5}


def test_the_text_segment_variant_still_runs_on_the_vlm(llava):
    suite = PromptSuite("t", (Prompt("t", "the cat <segment>went to the</segment> park and"),), "t")
    vhd = per_head(scan(llava, suite, probes=("divergence",)), "vhd")
    assert len(vhd) == 8


def test_image_prompts_are_refused_for_a_text_model_and_on_the_fast_path(llava):
    with pytest.raises(ConfigError, match="'tiny-random' is a text model"):
        hl.scan(load("tiny-random"), IMAGE_PROMPTS, probes=["sink"])
    with pytest.raises(ConfigError, match="fast path does not take image prompts"):
        hl.scan(llava, IMAGE_PROMPTS, probes=["sink"], path="fast")


def test_an_image_scan_is_deterministic(llava):
    first, second = (per_head(scan(llava, probes=("sink",)), "visual_sink_alpha") for _ in "ab")
    assert first == second


def test_text_prompts_on_the_vlm_give_equal_sinks_on_both_engine_paths(llava):
    texts = ["the cat went to the park and the dog", "mary gave the ball to john"]
    fast, bridge = (
        hl.scan(llava, texts, probes=["sink"], path=path).set_index(["metric", "layer", "head"])
        for path in ("fast", "bridge")
    )
    alpha = ("alpha", slice(None), slice(None))
    assert (fast.loc[alpha].value - bridge.loc[alpha].value).abs().max() < 1e-5
