"""The divergence probe at generated tokens (the paper's setting) on tiny-random-llava: equal to a
transcription of the paper's equations (tests/probes/reference_vhd.py), its answers equal to
Hugging Face generate, planted heads with a known VHD, and the teacher-forced variant kept."""

from pathlib import Path

import pytest
import torch

from probes import engine
from probes.core import schema
from probes.core.errors import ConfigError
from probes.families.divergence import DivergenceParams, DivergenceProbe
from probes.inputs.images import prompt_image_inputs, split_image_prompt
from probes.inputs.prompts import Prompt, PromptSuite, load_jsonl
from probes.models import load
from tests import planting
from tests.probes.reference_vhd import reference_vhd, t_vhd

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"


@pytest.fixture(scope="module")
def llava():
    return load("tiny-random-llava")


def run(model, params, plants=(), suite=None, batch_size=4):
    probe = DivergenceProbe(model.info, params)
    with planting.planted(model, plants):
        rows = engine.run(
            model, [probe], suite or load_jsonl(IMAGE_PROMPTS), batch_size=batch_size,
            max_tokens=None, progress=False,
        )  # fmt: skip
    return rows, probe.tables()


def vhd(rows):
    picked = rows[rows.metric == "vhd"]
    return {(int(r.layer), int(r["head"])): r.value for _, r in picked.iterrows()}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_rows_equal_the_papers_equations_on_hf_generated_answers(llava, batch_size):
    params = DivergenceParams(max_new_tokens=6, top_k=3)
    rows, tables = run(llava, params, batch_size=batch_size)
    answers = tables[schema.DIVERGENCE_ANSWERS_TABLE].set_index("prompt")
    references, lengths = {}, {}
    for prompt in load_jsonl(IMAGE_PROMPTS).prompts:
        before, image, after = split_image_prompt(llava, prompt, prompt.id)
        pixels = prompt_image_inputs(llava, prompt.image, before + image + after)["pixel_values"]
        references[prompt.id] = reference_vhd(
            llava, before + image + after, before + after, pixels, params.max_new_tokens
        )
        lengths[prompt.id] = len(before + image + after)
    for prompt, reference in references.items():
        assert list(answers.loc[prompt, "token_ids"]) == reference.answer  # HF's greedy answer
        assert answers.loc[prompt, "answer"] == "generated"
        per_token = rows[(rows.metric == "t_vhd") & (rows["prompt"] == prompt)]
        expected = t_vhd(reference.vhd, 3).tolist()
        assert per_token.value.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert list(answers.loc[prompt, "t_vhd"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
        start = lengths[prompt]  # each generated token's place in the sequence
        assert per_token.position.tolist() == list(range(start, start + len(expected)))
    mean = torch.cat([r.vhd for r in references.values()], dim=-1).double().mean(-1)
    for (layer, head), value in vhd(rows).items():
        assert value == pytest.approx(mean[layer, head].item(), rel=1e-4, abs=1e-7)


def test_a_head_blind_to_the_image_has_vhd_zero_and_one_reading_it_does_not(llava):
    """Layer 0 reads token embeddings: a head on its own token or on BOS writes the same output
    with and without the image (values carry no position); a uniform head averages the image in."""
    plants = [
        planting.attend_to(0, 0, lambda q: q),
        planting.bos_head(0, 1),
        planting.uniform_head(0, 2),
    ]
    scores = vhd(run(llava, DivergenceParams(max_new_tokens=4), plants)[0])
    assert scores[(0, 0)] == pytest.approx(0.0, abs=1e-6)
    assert scores[(0, 1)] == pytest.approx(0.0, abs=1e-6)
    assert scores[(0, 2)] > 1e-3
    assert min(v for (layer, _), v in scores.items() if layer == 1) > 1e-4


def test_teacher_forced_stays_available_for_image_prompts(llava):
    rows, tables = run(llava, DivergenceParams(answer="teacher_forced", answer_tokens=2))
    per_token = rows[rows.metric == "t_vhd"]
    assert per_token.groupby("prompt").size().tolist() == [2, 2, 2]
    table = tables[schema.DIVERGENCE_ANSWERS_TABLE]
    assert set(table["answer"]) == {"teacher_forced"}
    red = table[table["prompt"] == "red-square"].iloc[0]
    assert list(red["tokens"]) == ["is", "red"]  # the prompt's own last tokens


def test_text_prompts_generate_when_asked(tiny_model):
    suite = PromptSuite(
        "t", (Prompt("p", "<segment> the cat went home </segment> and the dog"),), "t"
    )
    rows, tables = run(
        tiny_model, DivergenceParams(answer="generated", max_new_tokens=3), suite=suite
    )
    (answer,) = tables[schema.DIVERGENCE_ANSWERS_TABLE].itertuples()
    assert answer.answer == "generated" and len(answer.token_ids) == 3
    assert (rows.metric == "t_vhd").sum() == 3
    _, auto_tables = run(tiny_model, DivergenceParams(answer_tokens=2), suite=suite)
    assert set(auto_tables[schema.DIVERGENCE_ANSWERS_TABLE]["answer"]) == {"teacher_forced"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"answer": "sampled"}, r"DivergenceParams\.answer must be one of"),
        ({"max_new_tokens": 0}, r"DivergenceParams\.max_new_tokens must be at least 1"),
    ],
)
def test_bad_parameters_name_themselves(params, message):
    with pytest.raises(ConfigError, match=message):
        DivergenceParams(**params)
