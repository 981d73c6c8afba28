"""The sink probe's visual sink tokens by massive activation (probes/families/massive_visual_sinks)
on tiny-random-llava with a planted massive activation and planted heads whose answer is known.
d_model = 32 keeps RMS-normed values under √32 ≈ 5.7, so τ = 2 here (τ = 20 needs d > 400)."""

from pathlib import Path

import pytest

import headlab as hl
from probes.core import hook_names
from probes.models import load
from tests import planting

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
SINK = 8  # an image token in every committed image prompt
PARAMS = {"sink": {"tau": 2.0}}


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


def plant_visual_sink(resid, hook):
    """Image token SINK gets a massive value in dimension 19, where the BOS's largest is."""
    resid = resid.clone()
    resid[:, SINK, 19] = 50.0
    return resid


MASSIVE = (hook_names.block(0, "resid_pre"), plant_visual_sink)


def scan(model, plants):
    with planting.planted(model, plants):
        return hl.scan(model, IMAGE_PROMPTS, probes=["sink"], params=PARAMS)


def per_head(table, metric):
    rows = table[table.metric == metric]
    return {(int(r.layer), int(r["head"])): r.value for _, r in rows.iterrows()}


def test_a_planted_massive_image_token_is_found_and_no_other(llava):
    table = scan(llava, [MASSIVE])
    sinks = table[table.metric == "massive_visual_sink"]
    assert set(sinks.prompt) == {"red-square", "blue-circle", "green-stripes"}
    assert (sinks.position == SINK).all()
    assert (sinks.value >= 1).all() and (sinks.token == "<image>").all()
    counts = table[(table.metric == "massive_visual_sink_count") & (table.layer == 0)]
    assert sorted(counts.value) == [1.0, 1.0, 1.0]


def test_without_a_massive_image_token_none_is_reported(llava):
    table = scan(llava, [])
    assert table[table.metric == "massive_visual_sink"].empty
    assert (table[table.metric == "massive_visual_sink_count"].value == 0).all()
    assert all(rate == 0 for rate in per_head(table, "image_centric_rate").values())


def test_a_head_on_the_sink_is_not_image_centric_and_a_spread_head_is(llava):
    plants = [
        MASSIVE,
        planting.attend_to(0, 0, lambda q: SINK if q >= SINK else q),  # only the visual sink
        planting.uniform_head(0, 1),  # everything, the image's 16 tokens among it
    ]
    table = scan(llava, plants)
    share, centric = per_head(table, "visual_sink_share"), per_head(table, "image_centric_rate")
    assert set(share) == set(centric) == {(layer, head) for layer in range(2) for head in range(4)}
    assert share[(0, 0)] == pytest.approx(1.0, abs=1e-4)
    assert centric[(0, 0)] == 0.0
    assert share[(0, 1)] == pytest.approx(1 / 16, rel=1e-3)  # one of 16 image tokens
    assert centric[(0, 1)] == 1.0
