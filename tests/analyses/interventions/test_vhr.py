"""VHR (arXiv 2412.13949): the paper's head selection on known VHD values, selection from a
divergence run's rows, α = 1 the identity on generation (ids and logits, exactly), α = 2
changing tiny-random-llava's generated text, and the scaled heads being the selected ones."""

from pathlib import Path

import pandas as pd
import pytest
import torch

import headlab as hl
from analyses.interventions.registry import INTERVENTIONS
from analyses.interventions.vhr import VisionHeadReinforcement, select_heads, vhd_of
from probes.core.errors import ConfigError
from probes.models import load

ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "data" / "prompts" / "images"
TEXT = "look at <image> what is the color of the thing ?"
IMAGE = IMAGES / "red_square.png"


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


@pytest.fixture(scope="module")
def rows(llava):
    return hl.scan(llava, IMAGES / "images.jsonl", probes=["divergence"], progress=False)


def layer(values, index=0):
    return {(index, head): value for head, value in enumerate(values)}


def test_each_layer_reinforces_its_heads_above_the_median_surges_left_out():
    vhd = layer([1, 2, 3, 4, 5, 6, 7, 100]) | layer([4, 3, 2, 1], index=1)
    # layer 0: 100 > mean + std (16 + 32.3) is a surge; the median is 4.5
    # layer 1: 4 > mean + std (2.5 + 1.12) is a surge too; the median is 2.5
    assert select_heads(vhd) == ((0, 4), (0, 5), (0, 6), (1, 1))
    assert select_heads(vhd, drop_surges=False) == (
        (0, 4), (0, 5), (0, 6), (0, 7), (1, 0), (1, 1)
    )  # fmt: skip
    assert select_heads(vhd, layers=[1]) == ((1, 1),)
    assert select_heads(vhd, share=0.25, layers=[1], drop_surges=False) == ((1, 0),)
    assert select_heads(layer([2, 2, 2, 2])) == ()  # nothing above an even layer's median
    with pytest.raises(ConfigError, match=r"VHR layers \[5\] have no VHD"):
        select_heads(vhd, layers=[5])
    with pytest.raises(ConfigError, match="share"):
        select_heads(vhd, share=1.5)


def test_selection_from_a_divergence_runs_rows(rows):
    vhd = vhd_of(rows)
    assert len(vhd) == 8 and all(value > 0 for value in vhd.values())
    edit = VisionHeadReinforcement.from_rows(rows)
    assert edit.heads == select_heads(vhd) and edit.heads and edit.alpha == 2.0
    assert edit.label.startswith("vhr2(") and INTERVENTIONS["vhr"] is VisionHeadReinforcement
    with pytest.raises(ConfigError, match="no divergence VHD"):
        vhd_of(rows[rows.probe != "divergence"])


def test_alpha_one_is_the_identity_exactly(llava, rows):
    heads = VisionHeadReinforcement.from_rows(rows).heads
    plain = hl.generate(llava, TEXT, IMAGE, max_new_tokens=8)
    plain_logits = keep_logits(llava, [])
    one = keep_logits(llava, [VisionHeadReinforcement(heads, 1.0)])
    assert one[0] == plain.tokens == plain_logits[0]
    assert torch.equal(one[1], plain_logits[1])


def keep_logits(model, interventions):
    from analyses.interventions.kinds import hooks
    from probes.decoding import generate
    from probes.inputs.images import prompt_image_inputs, tokenize_image_prompt
    from probes.inputs.prompts import Prompt

    tokens = tokenize_image_prompt(model, Prompt("p", TEXT, IMAGE), None, "p").tokens
    inputs = prompt_image_inputs(model, IMAGE, tokens)
    out = generate(model, tokens, image_inputs=inputs, max_new_tokens=8, keep_logits=True,
                   fwd_hooks=hooks(interventions, model.info))  # fmt: skip
    return out.tokens, out.logits


def test_alpha_two_changes_the_generated_text(llava, rows):
    plain = hl.generate(llava, TEXT, IMAGE, max_new_tokens=10)
    with hl.vhr(llava, rows) as block:
        reinforced = hl.generate(llava, TEXT, IMAGE, max_new_tokens=10)
    assert block.changed
    assert reinforced.tokens != plain.tokens
    edit = VisionHeadReinforcement.from_rows(rows)
    given = hl.generate(llava, TEXT, IMAGE, max_new_tokens=10, interventions=[edit])
    assert given.tokens == reinforced.tokens  # the API's two routes agree


def test_only_the_selected_heads_are_scaled(llava, rows):
    edit = VisionHeadReinforcement.from_rows(rows, alpha=2.0)
    edits = edit.edits(llava.info)
    assert {name for name, _ in edits} == {f"blocks.{li}.attn.hook_z" for li, _ in edit.heads}
    z = torch.randn(1, 5, llava.info.n_heads, llava.info.d_head)
    for name, change in edits:
        layer_index = int(name.split(".")[1])
        chosen = {h for li, h in edit.heads if li == layer_index}
        out = change(z, None)
        for head in range(llava.info.n_heads):
            factor = 2.0 if head in chosen else 1.0
            assert torch.equal(out[:, :, head], z[:, :, head] * factor)


def test_api_errors_name_what_is_wrong(llava, tiny_model):
    with pytest.raises(ConfigError, match="not a file"):
        hl.generate(llava, TEXT, IMAGES / "missing.png")
    with pytest.raises(ConfigError, match="text model"):
        hl.generate(tiny_model, TEXT, IMAGE)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        hl.generate(llava, TEXT, IMAGE, max_new_tokens=0)
    with pytest.raises(ConfigError, match="no divergence VHD"):
        hl.vhr(llava, pd.DataFrame({"probe": [], "metric": [], "layer": [], "head": []}))
