import json

import pytest

from probes.inputs.prompts import PromptFileError, load_jsonl, stdlib_docs_suite, stdlib_docs_text


def write(tmp_path, lines):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_round_trip_with_and_without_ids(tmp_path):
    path = write(
        tmp_path,
        [json.dumps({"text": "hello there", "id": "a"}), "", json.dumps({"text": "second"})],
    )
    suite = load_jsonl(path)
    assert [(p.id, p.text) for p in suite.prompts] == [("a", "hello there"), ("line-3", "second")]
    assert suite.source == str(path)


def test_malformed_line_is_reported_with_its_number(tmp_path):
    path = write(tmp_path, [json.dumps({"text": "ok"}), '{"text": "broken'])
    with pytest.raises(PromptFileError, match=r"prompts.jsonl:2: not valid JSON"):
        load_jsonl(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["a list"]', r":1: expected a JSON object"),
        ('{"txt": "x"}', r":1: expected an object"),
        ('{"text": "   "}', r":1: the prompt text is empty"),
    ],
)
def test_wrong_records_name_the_line(tmp_path, line, message):
    with pytest.raises(PromptFileError, match=message):
        load_jsonl(write(tmp_path, [line]))


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(PromptFileError, match=r"empty.jsonl holds no prompts"):
        load_jsonl(empty)
    with pytest.raises(PromptFileError, match=r"nothere.jsonl does not exist"):
        load_jsonl(tmp_path / "nothere.jsonl")


def test_duplicate_ids_are_refused(tmp_path):
    path = write(
        tmp_path, [json.dumps({"text": "a", "id": "x"}), json.dumps({"text": "b", "id": "x"})]
    )
    with pytest.raises(PromptFileError, match=r"'x' appears more than once"):
        load_jsonl(path)


def test_stdlib_suite_is_deterministic_english_prose():
    suite = stdlib_docs_suite(8, 200)
    assert suite.sha256 == stdlib_docs_suite(8, 200).sha256
    assert len(suite) == 8
    for prompt in suite.prompts:
        words = prompt.text.split()
        assert len(words) == 200
        common = sum(w.lower() in {"the", "a", "of", "to", "is", "and", "in"} for w in words)
        assert common / len(words) > 0.1  # function words: prose, not code
        assert ">>>" not in prompt.text


def test_stdlib_corpus_is_long_enough_for_long_contexts():
    assert len(" ".join(stdlib_docs_text()).split()) > 15_000


def test_asking_for_more_text_than_the_corpus_has_is_a_clear_error():
    with pytest.raises(ValueError, match="n_prompts=1000"):
        stdlib_docs_suite(1000, 1000)
