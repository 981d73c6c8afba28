"""Retrieval-head masking: head choice, mask invariants, and the experiment end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from analyses.cli.main import main
from analyses.interventions.kinds import HeadAblation, stacked_hooks
from analyses.interventions.kinds import hooks as intervention_hooks
from analyses.jobs import retrieval_masking as masking
from analyses.results import store
from probes import decoding as decode
from probes import engine
from probes.core import hook_names as hooks
from probes.families.retrieval import RetrievalParams, RetrievalProbe
from probes.inputs.prompts import Prompt, PromptSuite
from tests.planting import COPY_FILLERS, COPY_KEYS, copy_task_model, word_haystack

pytestmark = pytest.mark.usefixtures("one_thread")


def test_conditions_cover_every_k_mode_and_seed():
    ranked = [(layer, head) for layer in range(4) for head in range(4)]
    plan = masking.conditions(ranked, 4, 4, ks=(2, 3), seeds=(0, 1), modes=("uniform", "zero"))
    assert len(plan) == 1 + 2 * 2 * (1 + 2)
    assert plan[0].selection == "none" and plan[0].heads == ()
    assert {c.heads for c in plan if c.selection == "top" and c.k == 2} == {((0, 0), (0, 1))}
    assert len({c.label for c in plan}) == len(plan)
    with pytest.raises(masking.MaskingError, match="k must lie"):
        masking.conditions(ranked, 4, 4, ks=(17,), seeds=(0,), modes=("zero",))
    with pytest.raises(masking.MaskingError, match="unknown masking modes"):
        masking.conditions(ranked, 4, 4, ks=(1,), seeds=(0,), modes=("mean",))


PROMPT = [1, *range(4, 40)]


def decode_step(model, fwd_hooks=(), n_rows=1, capture=("z", "pattern")):
    """Logits and each layer's z / pattern of the first decoding step after PROMPT's prefill."""
    seen = {}

    def keep(name):  # keyed by the name asked for: hook_z reports itself as attn.o.hook_in
        def hook(activation, hook):
            seen[name] = activation.clone()

        return hook

    names = [hooks.attn(layer, kind) for layer in range(model.info.n_layers) for kind in capture]
    taps = [(name, keep(name)) for name in names]
    cache = decode.prefill(model, PROMPT)
    if n_rows > 1:
        cache.batch_repeat_interleave(n_rows)
    inputs = torch.full((n_rows, 1), PROMPT[-1])
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[*fwd_hooks, *taps]):
        logits, _ = model.bridge(inputs, return_type="logits_and_cache", past_key_values=cache)
    return logits, seen


def test_masking_no_heads_changes_nothing(tiny_model):
    clean, _ = decode_step(tiny_model)
    copies = [[HeadAblation((), "zero")], [HeadAblation((), "uniform")], []]
    masked, _ = decode_step(tiny_model, stacked_hooks(copies, tiny_model.info), n_rows=3)
    for row in range(3):
        torch.testing.assert_close(masked[row], clean[0])


@pytest.mark.parametrize("mode", ["uniform", "zero"])
def test_masking_is_per_head_and_per_row(tiny_model, mode):
    _, clean_seen = decode_step(tiny_model)
    copies = [[HeadAblation(((1, 2),), mode)], []]  # row 0 masked, row 1 not
    _, seen = decode_step(tiny_model, stacked_hooks(copies, tiny_model.info), n_rows=2)
    z0, z1 = hooks.attn(0, "z"), hooks.attn(1, "z")
    torch.testing.assert_close(seen[z0][0], clean_seen[z0][0])  # an earlier layer
    for head in (0, 1, 3):  # the other heads of the masked layer, GQA sibling L1H3 included
        torch.testing.assert_close(seen[z1][0, :, head], clean_seen[z1][0, :, head])
    torch.testing.assert_close(seen[z1][1], clean_seen[z1][0])  # the unmasked row
    assert not torch.allclose(seen[z1][0, :, 2], clean_seen[z1][0, :, 2])
    if mode == "zero":
        assert (seen[z1][0, :, 2] == 0).all()
    else:  # the authors' mask: uniform attention over every visible key
        row = seen[hooks.attn(1, "pattern")][0, 2, -1]
        torch.testing.assert_close(row, torch.full_like(row, 1 / len(PROMPT)))


@pytest.fixture(scope="module")
def copy_model():
    """tiny-random rewired so that head L0H1 copies the key word at position 1 (tests/planting)."""
    model, _ = copy_task_model()
    return model


def test_rows_that_stop_leave_the_batch_without_changing_the_others(copy_model):
    info = copy_model.info
    prompt = copy_model.tokenize("red the a of and to in is it that was")
    copies = [[], [HeadAblation(((0, 1),), "zero")], [HeadAblation(((0, 1),), "uniform")]]

    def alone(interventions, stop):
        hooks_ = intervention_hooks(interventions, info)
        cache = decode.prefill(copy_model, prompt)
        (tokens,) = decode.greedy_decode(
            copy_model, cache, prompt[-1], max_new_tokens=8, stop=stop, fwd_hooks=hooks_
        )
        return tokens

    free = [alone(c, lambda token: False) for c in copies]

    def stops_at(token):
        return {seq.index(token) if token in seq else len(seq) for seq in free}

    stop_token = max(sorted({t for seq in free for t in seq}), key=lambda t: len(stops_at(t)))
    stop = {stop_token}.__contains__
    batched = decode.greedy_decode(
        copy_model,
        decode.prefill(copy_model, prompt),
        prompt[-1],
        max_new_tokens=8,
        stop=stop,
        fwd_hooks=lambda rows: stacked_hooks([copies[i] for i in rows], info),
        n_rows=3,
    )
    assert batched == [alone(c, stop) for c in copies]
    assert len({len(tokens) for tokens in batched}) == 3  # each row stopped at its own step
    static = decode.greedy_decode(  # a plain hook list: stopped rows stay in the batch
        copy_model,
        decode.prefill(copy_model, prompt),
        prompt[-1],
        max_new_tokens=8,
        stop=stop,
        fwd_hooks=stacked_hooks(copies, info),
        n_rows=3,
    )
    assert static == batched


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory, copy_model):
    """A retrieval scan of the copy-task model, stored as a run: head L0H1 copies the needle."""
    data = tmp_path_factory.mktemp("data")
    model = copy_model
    (data / "hay.txt").write_text(word_haystack(list(COPY_FILLERS)), encoding="utf-8")
    needles = [{"id": k, "needle": k, "question": "the", "answer": k} for k in COPY_KEYS[:4]]
    (data / "needles.jsonl").write_text("\n".join(map(json.dumps, needles)), encoding="utf-8")
    params = RetrievalParams(
        lengths=(30, 60),
        depths=(0, 50),
        needles=str(data / "needles.jsonl"),
        haystack=str(data / "hay.txt"),
        template="{context} {question}",
        max_new_tokens=4,
    )
    probe = RetrievalProbe(model.info, params)
    unused = PromptSuite("unused", (Prompt("x", "the"),), "test")
    table = engine.run(model, [probe], unused, progress=False)
    manifest = {"model": {"model": model.info.name}, "probes": {"retrieval": params.as_dict()}}
    store.write_run(data, "copy", table.assign(model=model.info.name), manifest, probe.tables())
    return data, model


def test_masking_the_copy_head_breaks_retrieval_and_random_heads_do_not(copy_run):
    data, model = copy_run
    n_rows = len(store.load_run(data, "copy"))
    config = masking.MaskingConfig(
        "copy", data_dir=data, ks=(1, 2), seeds=(0, 1), progress=False, rows_per_batch=3
    )
    summary = masking.run(config, model=model).set_index("condition")
    assert summary.loc["unmasked", "accuracy"] == 1.0
    for mode in ("uniform", "zero"):
        assert summary.loc[f"top-1,{mode}", "heads"] == "L0H1"
        assert summary.loc[f"top-1,{mode}", "accuracy"] == 0.0
        for seed in (0, 1):
            assert summary.loc[f"random-1,{mode},seed={seed}", "accuracy"] == 1.0
    assert (summary["n_samples"] == 4).all()
    samples = store.read_side_table(data, "copy", masking.SAMPLES_TABLE)
    assert len(samples) == 4 * len(summary)
    stored = store.read_side_table(data, "copy", masking.SUMMARY_TABLE)
    assert stored["accuracy"].tolist() == summary["accuracy"].tolist()
    assert len(store.load_run(data, "copy")) == n_rows  # side tables stay out of the results
    niah = store.read_side_table(data, "copy", "niah_samples")
    assert niah["correct"].all() and len(niah) == 4


def test_cli_refuses_a_run_without_retrieval_scores(tmp_path, capsys):
    rows = pd.DataFrame(
        {
            "model": ["m"],
            "probe": ["sink"],
            "metric": ["alpha"],
            "layer": [0],
            "head": [0],
            "value": [0.5],
        }
    )
    store.write_run(tmp_path, "sinks", rows, {"model": {"model": "m"}, "probes": {"sink": {}}})
    assert main(["mask-retrieval", "sinks", "--data", str(tmp_path), "--quiet"]) == 2
    assert "did not run the retrieval probe" in capsys.readouterr().err
