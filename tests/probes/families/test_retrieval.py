"""Retrieval score: hand-built rows, planted heads on the tiny model, the authors' loop."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from probes import decoding as decode
from probes.decoding import rouge1_recall
from probes.families.retrieval import (
    RetrievalParams,
    RetrievalProbe,
    SampleOutcome,
    TopKeyRecorder,
    niah_samples,
    retrieval_hits,
    run_sample,
    top1_keys,
)
from probes.inputs import niah
from probes.models import wrap
from probes.models.tiny import TinyConfig, tiny_llama, word_vocabulary
from tests.planting import attend_to, bos_head, emit, word_haystack
from tests.probes.reference_retrieval import authors_sample_scores

TEMPLATE = "{context} question : {question} answer :"
WORDS = [w for w in word_vocabulary()[4:] if w.isalpha() and len(w) > 1]
HAYSTACK = word_haystack([w for w in WORDS if w not in {"blue", "cat", "house"}])
NEEDLE = niah.Needle(
    "code", "the secret code is blue cat house .", "what is the code ?", "blue cat house"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rouge1_recall():
    reference = "a blue heron standing on a red bicycle"
    assert rouge1_recall(reference, "A blue heron, standing.") == 4 / 8  # "a" counted once
    assert rouge1_recall(reference, "A blue heron standing on a RED bicycle!") == 1.0
    assert rouge1_recall("walk in the park", "walks in the park") == 3 / 4  # no stemming
    assert rouge1_recall("", "anything") == 0.0
    assert rouge1_recall("forty jars", "") == 0.0


def test_top1_keys_right_aligns_short_rows():
    rows = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    assert top1_keys(rows, 3).tolist() == [1, 0]
    assert top1_keys(rows, 10).tolist() == [8, 7]  # a 3-key sliding window of a 10-token cache


def test_hits_need_the_span_and_the_generated_token():
    prompt = torch.tensor([1, 10, 11, 12, 13, 11, 14])
    span = (2, 5)  # tokens 11, 12, 13
    # head 0: in span on token 11; 1: token 11 outside the span; 2: in span, other token; 3: BOS
    keys = torch.tensor([[2, 5, 3, 0]])
    assert retrieval_hits(keys, 11, prompt, span).tolist() == [[True, False, False, False]]
    assert retrieval_hits(keys, 12, prompt, span).tolist() == [[False, False, True, False]]
    assert not retrieval_hits(keys, 99, prompt, span).any()


def test_the_recorder_refuses_a_prefill(tiny_model):
    recorder = TopKeyRecorder(tiny_model.info)
    with pytest.raises(RuntimeError, match="one query row per decoding step"):
        decode.prefill(tiny_model, [1, 4, 5, 6], recorder.hooks())


@pytest.fixture(scope="module")
def builder(tiny_model) -> niah.NiahBuilder:
    return niah.NiahBuilder(tiny_model, HAYSTACK, TEMPLATE)


def planted_decode(model, sample, emitted, retrieval_head=(1, 2)):
    """Decode `sample` emitting `emitted`, with head `retrieval_head` on the needle token that
    step s emits (answer token s), a BOS sink at L0H1, and L1H0 one answer token behind."""
    n_prompt, (start, end) = len(sample.tokens), sample.answer_span

    def needle_key(offset):
        def key(query):
            step = query - (n_prompt - 1)
            return start + step + offset if 0 <= step + offset < end - start else query

        return key

    plants = (
        attend_to(*retrieval_head, needle_key(0)),
        bos_head(0, 1),
        attend_to(1, 0, needle_key(-1)),
    )
    return run_sample(
        model,
        sample,
        max_new_tokens=10,
        stop=decode.StopRule(model.tokenizer),
        prefill_hooks=plants,
        decode_hooks=(*plants, emit(emitted)),
    )


def test_planted_retrieval_head_scores_one_and_others_zero(tiny_model, builder):
    sample = builder.sample(NEEDLE, 60, 50)
    start, end = sample.answer_span
    answer = list(sample.tokens[start:end])
    outcome = planted_decode(tiny_model, sample, [*answer, tiny_model.tokenizer.eos_token_id])
    assert list(outcome.generated) == [*answer, tiny_model.tokenizer.eos_token_id]
    assert outcome.response == NEEDLE.answer and outcome.recall == 1.0
    scores = outcome.hits / (end - start)
    assert scores[1, 2] == 1.0  # the planted retrieval head
    assert scores[0, 1] == 0.0  # the sink head
    assert scores[1, 0] == 0.0  # in the needle, but one token behind
    assert ((scores >= 0) & (scores <= 1)).all()


def test_failed_samples_are_dropped_not_counted_as_zero(tiny_model, builder):
    params = RetrievalParams(lengths=(60,), recall_threshold=0.5)
    probe = RetrievalProbe(tiny_model.info, params)
    right = builder.sample(NEEDLE, 60, 0)
    wrong = builder.sample(NEEDLE, 60, 100)
    start = wrong.answer_span[0]
    the, eos = tiny_model.tokenizer.convert_tokens_to_ids("the"), tiny_model.tokenizer.eos_token_id
    a, b = right.answer_span
    probe.add(right, planted_decode(tiny_model, right, [*right.tokens[a:b], eos]))
    # One retrieved token, then junk: recall 1/3, and L1H2 has a hit (1/3) in this sample.
    failed = planted_decode(tiny_model, wrong, [wrong.tokens[start], the, the, eos])
    assert failed.hits[1, 2] == 1 and failed.recall == pytest.approx(1 / 3)
    probe.add(wrong, failed)
    rows = {
        (r["metric"], r.get("layer"), r.get("head"), r.get("length"), r.get("depth")): r["value"]
        for r in probe.rows()
    }
    assert rows[("retrieval_score", 1, 2, None, None)] == 1.0  # not (1 + 1/3) / 2, not 1 / 2
    assert rows[("retrieval_score", 0, 1, None, None)] == 0.0
    assert rows[("niah_accuracy", None, None, 60, 0)] == 1.0
    assert rows[("niah_accuracy", None, None, 60, 100)] == 0.0
    assert rows[("niah_accuracy", None, None, None, None)] == 0.5  # overall: condition "all"
    samples = probe.tables()["niah_samples"]
    assert samples["correct"].tolist() == [True, False]
    assert samples["response"].tolist() == [NEEDLE.answer, "blue the the"]


def test_recall_must_exceed_the_threshold(tiny_model, builder):
    probe = RetrievalProbe(tiny_model.info, RetrievalParams(lengths=(60,), recall_threshold=0.5))
    hits = torch.ones(tiny_model.info.n_layers, tiny_model.info.n_heads)
    probe.add(builder.sample(NEEDLE, 60, 0), SampleOutcome((), "x", 0.5, hits))
    assert probe.n_answered == 0
    assert not [r for r in probe.rows() if r["metric"] == "retrieval_score"]  # no row, not -1


def test_lengths_beyond_the_context_are_refused(tiny_model):
    params = RetrievalParams(lengths=(tiny_model.info.n_ctx,), max_new_tokens=50)
    with pytest.raises(niah.NiahError, match="exceed"):
        niah_samples(tiny_model, params)
    with pytest.raises(niah.NiahError, match=r"lengths \[256\] exceed 206"):  # before any pass
        RetrievalProbe(tiny_model.info, params)


@pytest.mark.parametrize("path", ["bridge", "fused"])
@pytest.mark.parametrize("seed", [0, 6])
def test_scores_equal_the_authors_loop_on_a_random_model(seed, path):
    """The answer is made of the random model's own favourite tokens, so some heads score."""
    hf_model, tokenizer = tiny_llama(TinyConfig(seed=seed))
    reference_model = copy.deepcopy(hf_model)
    model = wrap(hf_model, tokenizer, f"tiny-random-{seed}")
    stop = decode.StopRule(tokenizer)
    builder = niah.NiahBuilder(model, HAYSTACK, TEMPLATE)
    probe = builder.sample(NEEDLE, 60, 50)
    _, favourite, _ = authors_sample_scores(
        reference_model, tokenizer, list(probe.tokens), NEEDLE.answer, stop, 20
    )
    words = list(dict.fromkeys(tokenizer.convert_ids_to_tokens(t) for t in favourite if t > 3))
    answer = " ".join(words[:6])
    needle = niah.Needle("own", f"the secret code is {answer} .", NEEDLE.question, answer)
    n_scored = 0
    for length in (40, 80):
        for depth in (0, 50, 100):
            sample = builder.sample(needle, length, depth)
            theirs, their_output, their_span = authors_sample_scores(
                reference_model, tokenizer, list(sample.tokens), answer, stop, 20
            )
            ours = run_sample(model, sample, max_new_tokens=20, stop=stop, path=path)
            start, end = sample.answer_span
            assert their_span == (start, end)
            assert list(ours.generated) == their_output
            torch.testing.assert_close(ours.hits / (end - start), theirs, rtol=0, atol=1e-6)
            n_scored += int((theirs > 0).sum())
    assert n_scored >= 5  # the comparison is not between two all-zero tables


@pytest.mark.slow
def test_default_probe_params_fit_smollm2(smollm2):
    samples = niah_samples(smollm2, RetrievalParams())
    assert len(samples) == 20
    for sample in samples:
        start, end = sample.answer_span
        text = smollm2.tokenizer.decode(list(sample.tokens[start:end])).strip()
        assert text == sample.needle.answer
        assert sample.length - 2 <= len(sample.tokens) <= sample.length


def test_scan_cli_runs_the_retrieval_probe(tmp_path, capsys):
    from analyses.cli.main import main
    from analyses.results import store

    (tmp_path / "hay.txt").write_text(HAYSTACK, encoding="utf-8")
    line = {"id": "code", "needle": NEEDLE.needle, "question": NEEDLE.question, "answer": "blue"}
    (tmp_path / "needles.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    params = {
        "haystack": tmp_path / "hay.txt",
        "needles": tmp_path / "needles.jsonl",
        "template": TEMPLATE,
        "lengths": "40,60",
        "depths": "0,100",
        "max_new_tokens": 3,
    }
    argv = [
        "scan",
        "--model",
        "tiny-random",
        "--probes",
        "retrieval",
        "--data",
        str(tmp_path),
        "--run-id",
        "niah",
        "--quiet",
    ]
    for name, value in params.items():
        argv += ["--param", f"retrieval.{name}={value}"]
    assert main(argv) == 0
    out = capsys.readouterr().out  # the summary leads with the NIAH figures
    assert "tiny-random  NIAH accuracy 0% (0 of 4 samples answered; ROUGE-1 recall > 0.5)" in out
    assert "by length (tokens): 40: 0%, 60: 0%" in out
    assert "retrieval scores: none (the model answered no sample)" in out
    table = store.load_run(tmp_path, "niah")
    cells = table[(table["metric"] == "niah_accuracy") & table["condition"].isna()]
    assert sorted(zip(cells["length"], cells["depth"], strict=True)) == [
        (40, 0),
        (40, 100),
        (60, 0),
        (60, 100),
    ]
    samples = store.read_side_table(tmp_path, "niah", "niah_samples")
    assert len(samples) == 4 and (samples["n_generated"] <= 3).all()
    assert (samples["length"] - samples["n_tokens"]).between(0, 2).all()
    manifest = store.read_manifest(tmp_path, "niah")
    assert manifest["probes"]["retrieval"]["lengths"] == [40, 60]
    # A random model answers nothing, so no head is scored and masking has nothing to rank.
    assert not (table["metric"] == "retrieval_score").any()
    assert main(["mask-retrieval", "niah", "--data", str(tmp_path), "--quiet"]) == 2
    assert "no retrieval_score rows" in capsys.readouterr().err


@pytest.mark.slow
def test_decoding_through_the_bridge_matches_hugging_face_generate(smollm2):
    """The KV-cache decode (prefill prompt[:-1], then the last token) gives HF's greedy tokens."""
    from transformers import AutoModelForCausalLM

    from probes.models.gguf_cache import converted_dir, default_cache_dir

    builder = niah.NiahBuilder(smollm2, niah.load_haystack(niah.STDLIB_DOCS))
    sample = builder.sample(niah.load_needles(niah.DEFAULT_NEEDLES)[0], 256, 50)
    ours = run_sample(smollm2, sample, max_new_tokens=12, stop=lambda token: False)
    reference = AutoModelForCausalLM.from_pretrained(
        converted_dir(default_cache_dir(), "smollm2-135m"), attn_implementation="eager"
    )
    with torch.no_grad():
        generated = reference.generate(
            torch.tensor([sample.tokens]),
            max_new_tokens=12,
            do_sample=False,
            attention_mask=torch.ones(1, len(sample.tokens), dtype=torch.long),
        )
    assert list(ours.generated) == generated[0, len(sample.tokens) :].tolist()
    assert ours.recall > 0  # the 12 tokens start the answer, so some head had a chance


@pytest.mark.slow
def test_the_authors_span_search_misses_smollm2s_bpe_needle_and_the_scores_still_match(smollm2):
    """'smoked' alone is 'sm' + 'oked', in the prompt 'Ġsmoked': 5 of the answer's 7 ids (not
    > 90 %) lie in its span, so their search finds (-1, -1) and every score of theirs is 0. On
    headlab's span, whose ids decode to the answer, their loop gives the fused decode's scores."""
    from transformers import AutoModelForCausalLM

    from probes.models.gguf_cache import converted_dir, default_cache_dir

    builder = niah.NiahBuilder(smollm2, niah.load_haystack(niah.STDLIB_DOCS))
    sample = builder.sample(niah.load_needles(niah.DEFAULT_NEEDLES)[0], 256, 50)
    start, end = sample.answer_span
    tokenizer = smollm2.tokenizer
    assert tokenizer.decode(list(sample.tokens[start:end])) == " " + sample.needle.answer
    eager = AutoModelForCausalLM.from_pretrained(
        converted_dir(default_cache_dir(), "smollm2-135m"), attn_implementation="eager"
    )
    stop = decode.StopRule(tokenizer)
    args = (eager, tokenizer, list(sample.tokens), sample.needle.answer, stop, 20)
    missed, _, their_span = authors_sample_scores(*args)
    assert their_span == (-1, -1) and not missed.any()
    theirs, their_output, _ = authors_sample_scores(*args, span=sample.answer_span)
    ours = run_sample(smollm2, sample, max_new_tokens=20, stop=stop, path="fused")
    assert list(ours.generated) == their_output
    torch.testing.assert_close(ours.hits / (end - start), theirs, rtol=0, atol=1e-6)
    assert theirs.sum() > 0
