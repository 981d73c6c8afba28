"""Which queries are the text after an image (`probes.inputs.images.text_after_image`, the one
rule image_attention and the sink probe's visual sink sums share): the real positions past the
image's last token AND the marker that closes it (Qwen's <|vision_end|>, Idefics3's last
<fake_token_around_image>); LLaVA has no such marker. Planted heads whose only image-reading
query is the marker (must count for nothing) or the first text token (must count)."""

from dataclasses import replace

import pytest
import torch

import headlab as hl
from probes import engine
from probes.core import hook_names
from probes.families.image_attention import ImageAttentionProbe
from probes.inputs.images import text_after_image
from probes.inputs.prompts import load_jsonl
from probes.models import load
from tests import planting
from tests.probes.engine.image_scans import IMAGE_PROMPTS, per_head

DIM = 19  # the residual dimension given a massive value (BOS and one image token)


@pytest.fixture(scope="module")
def qwen():
    return load("tiny-random-qwen2.5-vl")


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


@pytest.fixture(scope="module")
def prompt():
    """A suite of one committed image prompt."""
    suite = load_jsonl(IMAGE_PROMPTS)
    return replace(suite, prompts=tuple(p for p in suite.prompts if p.id == "green-stripes"))


def layout(model, prompt) -> tuple[tuple[int, ...], list[int]]:
    """The prompt's tokens and the positions of its image tokens."""
    (tokenized,) = engine.tokenize_suite(model, prompt, 256)
    image_id = model.vision.image_token_id
    return tokenized.tokens, [i for i, t in enumerate(tokenized.tokens) if t == image_id]


def only_query_reads(layer: int, head: int, query: int, key: int):
    """A head whose query `query` attends only to `key`; every other query only to BOS."""
    return planting.attend_to(layer, head, lambda q: key if q == query else 0)


def image_share(model, prompt, plants) -> dict[tuple[int, int], float]:
    probe = ImageAttentionProbe(model.info)
    with planting.planted(model, plants):
        rows = engine.run(model, [probe], prompt, progress=False)
    return per_head(rows, "image_share")


def test_qwen_vision_end_is_not_a_text_query_and_the_next_token_is(qwen, prompt):
    tokens, image = layout(qwen, prompt)
    marker = image[-1] + 1
    assert tokens[marker] == qwen.vision.processing.end_token_id
    n_text = len(tokens) - marker - 1  # the real queries past <|vision_end|>
    plants = [
        only_query_reads(1, 0, marker, image[0]),
        only_query_reads(1, 1, marker + 1, image[0]),
    ]
    share = image_share(qwen, prompt, plants)
    # Counting the marker as a text query gave head (1, 0) 1 / (n_text + 1).
    assert share[(1, 0)] == pytest.approx(0.0, abs=1e-6)
    assert share[(1, 1)] == pytest.approx(1 / n_text, rel=1e-4)


def test_negative_llava_has_no_marker_and_its_first_text_token_counts(llava, prompt):
    tokens, image = layout(llava, prompt)
    first = image[-1] + 1
    n_text = len(tokens) - first
    share = image_share(llava, prompt, [only_query_reads(1, 0, first, image[0])])
    assert share[(1, 0)] == pytest.approx(1 / n_text, rel=1e-4)


def massive_at(position: int):
    """BOS and `position` get a massive value in DIM at layer 0's input (DIM the sink dimension)."""

    def hook(resid, hook):
        resid = resid.clone()
        resid[:, [0, position], DIM] = 50.0
        return resid

    return (hook_names.block(0, "resid_pre"), hook)


def test_qwen_vision_end_is_no_query_of_the_visual_sink_sums(qwen, prompt):
    tokens, image = layout(qwen, prompt)
    marker = image[-1] + 1
    n_text = len(tokens) - marker - 1

    def spread_from(head: int, query: int):  # image-centric: 1 / len(image) on the visual sink
        return planting.attend_uniform(0, head, lambda q: image if q == query else [0])

    plants = [massive_at(image[0]), spread_from(0, marker), spread_from(1, marker + 1)]
    with planting.planted(qwen, plants):
        table = hl.scan(qwen, prompt, probes=["sink"], params={"sink": {"tau": 4.0}})
    sinks = table[(table.metric == "massive_visual_sink_count") & (table.layer == 0)]
    assert sinks.value.tolist() == [1.0]
    centric, share = per_head(table, "image_centric_rate"), per_head(table, "visual_sink_share")
    assert centric[(0, 0)] == 0.0 and share[(0, 0)] == pytest.approx(0.0, abs=1e-6)
    assert centric[(0, 1)] == pytest.approx(1 / n_text, rel=1e-6)
    assert share[(0, 1)] == pytest.approx(1 / (len(image) * n_text), rel=1e-4)


def test_the_rule_skips_each_architecture_s_closing_marker_only(qwen, llava):
    idefics = load("tiny-random-idefics3")
    end_of = {
        "qwen": (qwen, qwen.vision.processing.end_token_id),
        "idefics3": (idefics, idefics.vision.processing.tokens.fake),
        "llava": (llava, None),
    }
    for name, (model, marker) in end_of.items():
        image_id, text_id = model.vision.image_token_id, 7
        body = [image_id] * 3 + ([] if marker is None else [marker])
        row = [0, *body, text_id, text_id, text_id]
        padded = [0, *body, text_id, text_id]  # a shorter second row, padded to the same length
        tokens = torch.tensor([row, [*padded, text_id], [0] + [text_id] * (len(row) - 1)])
        lengths = torch.tensor([len(row), len(padded), len(row)])
        is_image, text = text_after_image(model.vision, tokens, lengths)
        start = 1 + len(body)
        assert is_image[0].nonzero().flatten().tolist() == [1, 2, 3], name
        assert text[0].nonzero().flatten().tolist() == list(range(start, len(row))), name
        assert text[1].nonzero().flatten().tolist() == list(range(start, len(padded))), name
        assert not text[2].any(), name  # no image: no text after it
