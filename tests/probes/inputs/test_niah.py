"""Needle-in-a-haystack prompts: needle files, answer spans, depths, lengths, chat templates."""

from __future__ import annotations

import json

import pytest

from probes.inputs import niah
from probes.inputs.prompts import PromptFileError, stdlib_docs_text
from probes.models.tiny import word_vocabulary
from tests.planting import word_haystack

TINY_TEMPLATE = "{context} question : {question} answer :"
WORDS = [w for w in word_vocabulary()[4:] if w.isalpha() and len(w) > 1 and w not in {"blue"}]
NEEDLE = niah.Needle(
    "code", "the secret code is blue cat house .", "what is the code ?", "blue cat"
)


@pytest.fixture(scope="module")
def builder(tiny_model) -> niah.NiahBuilder:
    return niah.NiahBuilder(tiny_model, word_haystack(WORDS), TINY_TEMPLATE)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_project_needles_load_and_their_answers_are_not_in_the_default_haystack():
    needles = niah.load_needles(niah.DEFAULT_NEEDLES)
    haystack = "\n".join(stdlib_docs_text()).lower()
    assert len(needles) >= 10
    assert len({n.id for n in needles}) == len(needles)
    for needle in needles:
        assert needle.answer.lower() in needle.needle.lower()
        assert needle.answer.lower() not in haystack, needle.id


GOOD = json.dumps({"id": "a", "needle": "The key is red.", "question": "Which?", "answer": "red"})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"needle": "x y", "question": "q?"}), '"answer" must be a non-empty string'),
        (json.dumps({"needle": "x y", "question": "q?", "answer": "z"}), "is not in the needle"),
        (json.dumps({"needle": "x", "question": "q", "answer": "x", "anwser": 1}), "unknown keys"),
        (json.dumps({"needle": "x", "question": " ", "answer": "x"}), '"question" must be'),
    ],
)
def test_bad_needle_lines_name_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "needles.jsonl", [GOOD, bad])
    with pytest.raises(PromptFileError, match=message) as error:
        niah.load_needles(path)
    assert f"{path}:2" in str(error.value)


def test_needle_files_refuse_duplicates_emptiness_and_absence(tmp_path):
    with pytest.raises(PromptFileError, match="'a' appears more than once"):
        niah.load_needles(write_lines(tmp_path / "dup.jsonl", [GOOD, GOOD]))
    with pytest.raises(PromptFileError, match="holds no needles"):
        niah.load_needles(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(PromptFileError, match="does not exist"):
        niah.load_needles(tmp_path / "missing.jsonl")


def test_the_authors_real_needle_key_is_read_as_the_answer(tmp_path):
    line = json.dumps(
        {"needle": "Mr Green can't ride.", "question": "Why?", "real_needle": "Can't"}
    )
    (needle,) = niah.load_needles(write_lines(tmp_path / "theirs.jsonl", [line]))
    assert needle.answer == "Can't"
    assert needle.needle[needle.answer_offset :].startswith("can't")


def test_answer_span_depth_and_length(tiny_model, builder):
    tokenizer = tiny_model.tokenizer
    period, bos = tokenizer.convert_tokens_to_ids("."), tiny_model.info.bos_token_id
    needle_ids = tokenizer(NEEDLE.needle, add_special_tokens=False)["input_ids"]
    for length in (40, 80):
        starts = []
        for depth in (0, 25, 50, 75, 100):
            sample = builder.sample(NEEDLE, length, depth)
            tokens = list(sample.tokens)
            start, end = sample.answer_span
            assert tokenizer.decode(tokens[start:end]) == NEEDLE.answer
            assert tokens[0] == bos and tokens.count(bos) == 1
            assert length - 2 <= len(tokens) <= length
            at = start - needle_ids.index(tokens[start])
            assert tokens[at : at + len(needle_ids)] == needle_ids
            if depth < 100:  # moved back to a sentence start; at 100 it is appended
                assert tokens[at - 1] in (bos, period)
            starts.append(at)
        assert starts[0] == 1  # depth 0: right after BOS
        assert starts == sorted(starts) and starts[-1] > starts[0]
        question = tokenizer(" question", add_special_tokens=False)["input_ids"][0]
        assert tokens[at + len(needle_ids)] == question  # depth 100: the haystack's end


@pytest.mark.parametrize("template", ["{context} only", "{context} {question} {other}", "{"])
def test_bad_templates_are_refused(tiny_model, template):
    with pytest.raises(niah.NiahError, match="template"):
        niah.NiahBuilder(tiny_model, "a b c .", template)


def test_lengths_that_do_not_fit_raise(builder):
    with pytest.raises(niah.NiahError, match="leaves no room for a haystack"):
        builder.sample(NEEDLE, 12, 50)
    with pytest.raises(niah.NiahError, match="the haystack has only"):
        builder.sample(NEEDLE, 100_000, 50)
    with pytest.raises(niah.NiahError, match="depth"):
        builder.sample(NEEDLE, 60, 101)


def test_grid_rotates_needles_through_the_cells(builder):
    needles = [
        niah.Needle(f"n{i}", f"the key is {w} .", "what ?", w)
        for i, w in enumerate(["red", "green", "blue"])
    ]
    one = niah.grid(builder, needles, (40, 60), (0, 100), needles_per_cell=1)
    assert [s.needle.id for s in one] == ["n0", "n1", "n2", "n0"]
    assert [(s.length, s.depth) for s in one] == [(40, 0), (40, 100), (60, 0), (60, 100)]
    every = niah.grid(builder, needles, (40,), (0, 50), needles_per_cell=3)
    assert [s.needle.id for s in every] == ["n0", "n1", "n2"] * 2
    with pytest.raises(niah.NiahError, match="needles_per_cell"):
        niah.grid(builder, needles, (40,), (0,), needles_per_cell=4)


def test_haystack_sources(tmp_path):
    text = tmp_path / "hay.txt"
    text.write_text("Alpha beta. Gamma delta.", encoding="utf-8")
    assert niah.load_haystack(str(text)) == "Alpha beta. Gamma delta."
    prompts = write_lines(tmp_path / "hay.jsonl", ['{"text": "one two"}', '{"text": "three"}'])
    assert niah.load_haystack(str(prompts)) == "one two\nthree"
    assert niah.load_haystack(niah.STDLIB_DOCS).startswith(stdlib_docs_text()[0])
    with pytest.raises(PromptFileError, match="neither 'stdlib-docs' nor an existing file"):
        niah.load_haystack(str(tmp_path / "nope.txt"))


def test_token_span_and_insertion_point():
    offsets = [(0, 0), (0, 3), (3, 7), (7, 12), (12, 13)]  # BOS, "The", " red", " bike", "."
    assert niah.token_span(offsets, 4, 12) == (2, 4)  # " red bike": the leading space's token too
    with pytest.raises(niah.NiahError, match="no token covers"):
        niah.token_span(offsets, 20, 22)
    text = "One two. Three four! Five"
    assert niah.insertion_point(text, text.index("Five") + 2) == text.index("Five")
    assert niah.insertion_point(text, text.index("four")) == text.index("Three")
    assert niah.insertion_point(text, 3) == 0


@pytest.mark.slow
def test_chat_template_and_explicit_bos_on_smollm2(smollm2):
    builder = niah.NiahBuilder(smollm2, niah.load_haystack(niah.STDLIB_DOCS))
    needle = niah.load_needles(niah.DEFAULT_NEEDLES)[1]
    sample = builder.sample(needle, 256, 50)
    tokens = list(sample.tokens)
    start, end = sample.answer_span
    tokenizer = smollm2.tokenizer
    assert smollm2.chat
    assert tokens[0] == smollm2.info.bos_token_id != tokens[1]  # BOS once, not doubled
    assert tokenizer.decode(tokens[start:end]).strip() == needle.answer
    assert tokenizer.decode(tokens).endswith("<|im_start|>assistant\n")
    assert 254 <= len(tokens) <= 256
