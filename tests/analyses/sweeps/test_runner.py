import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from analyses.cli.main import main
from analyses.interventions.kinds import HeadAblation, HeadScale, hooks
from analyses.results import locks, store
from analyses.sweeps import runner as sweep
from analyses.sweeps import work
from analyses.sweeps.plan import PlanError, Ranking, Unit
from analyses.sweeps.plan_file import load_plan, plan_from_dict
from analyses.sweeps.tasks import make_task
from tests import planting

REPO = Path(__file__).resolve().parents[3]
KEYS = ["probe", "metric", "condition", "layer", "head"]


def write_pairs(path: Path, pairs) -> str:
    lines = [
        json.dumps({"id": pid, "text": text, "correct": good, "incorrect": bad})
        for pid, text, good, bad in pairs
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def copy_task(tmp_path_factory):
    model, pairs = planting.copy_task_model(task_head=(0, 1))
    path = write_pairs(tmp_path_factory.mktemp("pairs") / "copy.jsonl", pairs)
    return model, path


def harm(table, metric, condition, probe="sweep"):
    rows = table[(table["metric"] == metric) & (table["condition"] == condition)]
    rows = rows[(rows["probe"] == probe) & rows["head"].notna()]
    return rows.set_index(["layer", "head"])["value"]


def test_planted_task_head_tops_the_single_head_ablation_map(copy_task, tmp_path):
    model, pairs_path = copy_task
    plan = plan_from_dict(
        {
            "model": model.info.name,
            "tasks": {"ioi": {"path": pairs_path}},
            "single_head": {"modes": ["zero", "mean", "uniform"]},
            "attribution": ["zero"],
            "batch_size": 8,
            "copies": 3,
        }
    )
    path = sweep.run(sweep.SweepConfig(plan, data_dir=tmp_path, progress=False), model=model)
    table = store.read_table(path)
    clean = table.query("condition == 'clean' and metric == 'ioi.logit_diff'")["value"].item()
    assert clean > 1
    for mode in ("zero", "mean", "uniform"):
        damage = harm(table, "ioi.logit_diff.harm", mode)
        assert len(damage) == model.info.n_layers * model.info.n_heads
        assert damage.idxmax() == (0, 1), mode
        assert damage[(0, 1)] > 0.6 * clean, mode
        assert damage.drop((0, 1)).abs().max() < 0.1 * clean, mode
    estimate = harm(table, "ioi.logit_diff.harm", "zero", probe="attribution")
    assert estimate.idxmax() == (0, 1)


def test_fast_path_equals_one_full_forward_per_intervention(tiny_model, tmp_path):
    plan = plan_from_dict(
        {
            "model": "tiny-random",
            "tasks": {"lm": {"n_prompts": 3, "max_tokens": 20}},
            "single_head": {"modes": ["zero", "uniform"]},
            "strength": [{"kind": "softpag", "values": [0.5], "heads": [[1, 1], [1, 3]]}],
            "batch_size": 2,
            "copies": 4,
        }
    )
    fast = store.read_table(
        sweep.run(sweep.SweepConfig(plan, tmp_path / "fast", progress=False), model=tiny_model)
    )
    slow_config = sweep.SweepConfig(plan, tmp_path / "slow", progress=False, prefix_reuse=False)
    slow = store.read_table(sweep.run(slow_config, model=tiny_model))
    pd.testing.assert_frame_equal(
        fast.drop(columns="value"), slow.drop(columns="value"), check_like=True
    )
    torch.testing.assert_close(
        torch.tensor(fast["value"].to_numpy()), torch.tensor(slow["value"].to_numpy()),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip
    manifest = store.read_manifest(tmp_path / "fast", sweep.default_run_id(plan))
    assert manifest["sweeps"]["sweep"]["prefix_reuse"] == {"lm": True}
    # And both agree with the task's own plain evaluation of an intervention.
    task = make_task("lm", {"n_prompts": 3, "max_tokens": 20})
    alone = task.evaluate(tiny_model, hooks([HeadAblation(((1, 2),), "zero")], tiny_model.info))
    got = fast.query("metric == 'lm.loss' and condition == 'zero' and layer == 1 and head == 2")
    assert got["value"].item() == pytest.approx(alone["loss"], abs=1e-5)


def test_scale_one_is_harmless_and_scale_zero_equals_zero_ablation(tiny_model, tmp_path):
    plan = plan_from_dict(
        {
            "model": "tiny-random",
            "tasks": {"lm": {"n_prompts": 2, "max_tokens": 16}},
            "single_head": {"modes": ["zero"], "layers": [1]},
            "strength": [{"kind": "scale", "values": [0.0, 1.0, 2.0], "heads": [[1, 3]]}],
        }
    )
    table = store.read_table(
        sweep.run(sweep.SweepConfig(plan, tmp_path, progress=False), model=tiny_model)
    )
    scaled = table[table["metric"] == "lm.loss.harm"].set_index("condition")["value"]
    assert abs(scaled["scale=1|heads:L1H3"]) < 1e-5
    assert abs(scaled["scale=2|heads:L1H3"]) > 1e-4
    zeroed = harm(table, "lm.loss.harm", "zero")[(1, 3)]
    assert scaled["scale=0|heads:L1H3"] == pytest.approx(zeroed, abs=1e-5)
    assert HeadScale(((1, 3),), 0.0).label != HeadAblation(((1, 3),)).label


def test_top_k_versus_layer_matched_random_heads(copy_task, tmp_path):
    model, pairs_path = copy_task
    metric_rows = pd.DataFrame(
        [
            {
                "probe": "planted",
                "metric": "score",
                "layer": layer,
                "head": head,
                "value": 1.0 if (layer, head) == (0, 1) else 0.1 * head,
            }
            for layer in range(2)
            for head in range(4)
        ]
    ).assign(model=model.info.name)
    store.write_run(tmp_path, "metrics", metric_rows, {"model": {"model": model.info.name}})
    plan = plan_from_dict(
        {
            "model": model.info.name,
            "tasks": {"ioi": {"path": pairs_path}},
            "top_k": [{"metric": "score", "k": [1, 3], "seeds": [0, 1, 2]}],
        }
    )
    config = sweep.SweepConfig(plan, tmp_path, run_id="metrics", progress=False)
    table = store.read_table(sweep.run(config, model=model))
    manifest = store.read_manifest(tmp_path, "metrics")
    groups = manifest["sweeps"]["sweep"]["groups"]
    assert groups["ioi|zero|top1:score"] == [[0, 1]]
    assert groups["ioi|zero|top3:score"] == [[0, 1], [0, 3], [1, 3]]
    for seed in range(3):
        drawn = groups[f"ioi|zero|random3:score:seed{seed}"]
        assert sorted(layer for layer, _ in drawn) == [0, 0, 1]  # layer-matched
        assert not {tuple(h) for h in drawn} & {(0, 1), (0, 3), (1, 3)}
    damage = table[table["metric"] == "ioi.logit_diff.harm"].set_index("condition")["value"]
    for seed in range(3):
        assert damage["zero|top1:score"] > 5 * abs(damage[f"zero|random1:score:seed{seed}"])
    assert sorted(manifest["sweeps"]) == ["sweep"] and "plan" in manifest["sweeps"]["sweep"]


def test_finished_sweep_is_a_no_op_and_a_changed_plan_needs_a_new_name(tiny_model, tmp_path):
    raw = {"model": "tiny-random", "tasks": {"lm": {"n_prompts": 1, "max_tokens": 8}},
           "single_head": {"modes": ["zero"], "layers": [0]}}  # fmt: skip
    config = sweep.SweepConfig(plan_from_dict(raw), tmp_path, progress=False)
    path = sweep.run(config, model=tiny_model)
    stamp = path.stat().st_mtime_ns
    assert sweep.run(config, model=tiny_model) == path and path.stat().st_mtime_ns == stamp
    changed = sweep.SweepConfig(
        plan_from_dict({**raw, "single_head": {"modes": ["uniform"], "layers": [0]}}),
        tmp_path, run_id=path.parent.name, progress=False,
    )  # fmt: skip
    with pytest.raises(PlanError, match="different plan"):
        sweep.run(changed, model=tiny_model)


def test_a_sweep_run_is_named_by_model_and_plan_and_older_long_ids_still_resume(
    tiny_model, tmp_path
):
    raw = {"model": "tiny-random", "tasks": {"lm": {"n_prompts": 1, "max_tokens": 8}},
           "single_head": {"modes": ["zero"], "layers": [0]}}  # fmt: skip
    plan = plan_from_dict(raw)
    path = sweep.run(sweep.SweepConfig(plan, tmp_path / "new", progress=False), model=tiny_model)
    assert path.parent.name == f"tiny-random-sweep-{plan.sha256[:8]}"
    legacy = f"sweep-tiny-random-{plan.sha256[:10]}"  # what a sweep of an older version made
    old = sweep.SweepConfig(plan, tmp_path / "old", run_id=legacy, progress=False)
    first = sweep.run(old, model=tiny_model)
    stamp = first.stat().st_mtime_ns
    again = sweep.run(sweep.SweepConfig(plan, tmp_path / "old", progress=False), model=tiny_model)
    assert again == first and again.stat().st_mtime_ns == stamp  # found, finished: a no-op
    assert store.run_ids(tmp_path / "old") == [legacy]


def test_plan_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[single_head]\nmodes = ["zero"]\nlayer = [1]\n')
    with pytest.raises(PlanError, match=r"bad.toml \[single_head\]: unknown key\(s\) \['layer'\]"):
        load_plan(bad)
    bad.write_text('[single_head]\nmodes = ["ones"]\n')
    with pytest.raises(PlanError, match="'ones' is not one of"):
        load_plan(bad)
    bad.write_text("model = 'x'\n")
    with pytest.raises(PlanError, match="nothing to do"):
        load_plan(bad)
    bad.write_text("[[strength]]\nkind = 'scale'\nvalues = [1.0]\n")
    with pytest.raises(PlanError, match="exactly one of heads"):
        load_plan(bad)
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "missing.toml")


def test_ranking_reports_what_the_run_holds():
    from analyses.sweeps.plan import rank_heads

    table = pd.DataFrame(
        {"metric": ["alpha"] * 4, "probe": ["sink"] * 4, "position": [0, 1, 0, 1],
         "condition": [None] * 4, "layer": [0, 0, 1, 1], "head": [0, 0, 0, 0],
         "value": [0.9, 0.1, 0.2, 0.8]}
    )  # fmt: skip
    with pytest.raises(PlanError, match=r"several rows per head.*position"):
        rank_heads(table, Ranking("alpha"), "r1")
    assert rank_heads(table, Ranking("alpha", position=0), "r1") == [(0, 0), (1, 0)]
    assert rank_heads(table, Ranking("alpha", position=1), "r1") == [(1, 0), (0, 0)]
    with pytest.raises(
        PlanError, match=r"run r1 has no per-head rows for beta; metrics: \['alpha'\]"
    ):
        rank_heads(table, Ranking("beta"), "r1")


def test_cli_sweep_from_flags(tmp_path, capsys):
    code = main(["sweep", "--model", "tiny-random", "--tasks", "lm", "--single-head", "zero",
                 "--attribution", "zero", "--data", str(tmp_path), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "clean lm.loss" in out and "Spearman(attribution, exact) lm.loss.harm [zero]" in out
    assert main(["sweep", "--plan", "x.toml", "--tasks", "lm", "--data", str(tmp_path)]) == 2
    assert "either --plan or plan flags" in capsys.readouterr().err


# --- resumability, with a real process killed by SIGKILL ----------------------------------------


def sweep_command(plan: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "analyses.cli", "sweep", "--plan", str(plan), "--data",
            str(data), "--quiet"]  # fmt: skip


def test_sweep_killed_with_sigkill_resumes_without_lost_or_doubled_rows(tmp_path):
    pairs = write_pairs(
        tmp_path / "pairs.jsonl",
        [("a", "red the cat went to the park", "red", "blue"),
         ("b", "blue a dog went to the house of", "blue", "green")],
    )  # fmt: skip
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f"""model = "tiny-random"
name = "resume"
batch_size = 1
copies = 1
attribution = ["zero"]
[tasks.lm]
n_prompts = 6
max_tokens = 48
[tasks.ioi]
path = "{pairs}"
[single_head]
modes = ["zero", "mean", "uniform"]
[[strength]]
kind = "scale"
values = [0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 2.0, 3.0]
heads = [[0, 1], [1, 2]]
"""
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(sweep_command(plan, killed), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list(killed.glob("runs/*/sweep-resume.parts/part-*.parquet"))
        if len(found) >= 4:
            parts = found[0].parent
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert parts is not None, "the sweep finished (or failed) before it could be killed"
    assert process.returncode == -signal.SIGKILL
    n_units = 2 * (3 * 8 + 8) + 2 + 2  # tasks × (single heads + strengths) + clean + attribution
    finished_before = sweep.done_units(parts)
    assert 0 < len(finished_before) < n_units
    assert not list(parts.parent.glob("sweep-resume.parquet"))

    resumed = subprocess.run(sweep_command(plan, killed), cwd=REPO, env=env, capture_output=True,
                             text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_units - 4} units" in resumed.stdout  # units of the plan, clean/attribution aside
    run_id = parts.parent.name
    got = store.read_table(killed / "runs" / run_id / "sweep-resume.parquet")
    uninterrupted = sweep.SweepConfig(load_plan(plan), whole, progress=False)
    want = store.read_table(sweep.run(uninterrupted))  # the same plan in one go, in-process
    assert not got.duplicated(KEYS).any()
    pd.testing.assert_frame_equal(got, want)
    assert not parts.exists()
    record = store.read_manifest(killed, run_id)["sweeps"]["resume"]
    plan_units_before = [u for u in finished_before if not u.endswith(("|clean", ":zero"))]
    assert record["last_session"]["units"] == n_units - 4 - len(plan_units_before)


def test_two_copies_of_one_sweep_one_is_refused_at_once_and_nothing_is_doubled(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'model = "tiny-random"\nname = "twice"\nbatch_size = 1\ncopies = 1\n'
        "[tasks.lm]\nn_prompts = 24\nmax_tokens = 128\n"
        '[single_head]\nmodes = ["zero", "mean", "uniform"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    data = tmp_path / "data"
    first = subprocess.Popen(sweep_command(plan, data), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    locks_dir = locks.lock_directory(store.runs_root(data))
    while time.monotonic() < deadline and first.poll() is None:
        if list(locks_dir.glob("*.holder.json")):
            break  # the first copy holds the run's lock
        time.sleep(0.005)
    second = subprocess.run(sweep_command(plan, data), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is being written by another process" in lines[0]
    assert f"pid {first.pid}" in lines[0]
    (table_file,) = data.glob("runs/*/sweep-twice.parquet")
    got = store.read_table(table_file)
    want = store.read_table(
        sweep.run(sweep.SweepConfig(load_plan(plan), tmp_path / "alone", progress=False))
    )
    assert not got.duplicated(KEYS).any()
    pd.testing.assert_frame_equal(got, want)


# --- NIAH accuracy as a sweep task (the retrieval probe's grid, greedy decoding) ---------------


@pytest.fixture
def tiny_niah(tmp_path):
    from probes.models.tiny import word_vocabulary

    words = [w for w in word_vocabulary()[4:] if w.isalpha() and len(w) > 1 and w != "blue"]
    haystack = tmp_path / "haystack.txt"
    haystack.write_text(planting.word_haystack(words))
    needles = tmp_path / "needles.jsonl"
    needle = {"id": "n", "needle": "the secret code is blue .", "question": "what is the code ?",
              "answer": "blue"}  # fmt: skip
    needles.write_text(json.dumps(needle) + "\n")
    template = "{context} question : {question} answer :"
    return {"lengths": [48], "depths": [50], "max_new_tokens": 3, "needles": str(needles),
            "haystack": str(haystack), "template": template}  # fmt: skip


def test_niah_task_scores_planted_answers_and_stacks_rows(tiny_model, tiny_niah):
    task = make_task("niah", tiny_niah)
    tok = tiny_model.tokenizer

    def answer(word):  # decoding emits `word`, then stops (a fresh hook: it counts steps)
        return planting.emit([tok.convert_tokens_to_ids(word), tok.eos_token_id])

    assert task.evaluate(tiny_model, [answer("blue")]) == {"accuracy": 1.0, "recall": 1.0}
    assert task.evaluate(tiny_model, [answer("red")]) == {"accuracy": 0.0, "recall": 0.0}
    copies = [[], [HeadAblation(((0, 1),), "uniform")], [HeadScale(((1, 0),), 2.0)]]
    with planting.planted(tiny_model, [answer("blue")]):
        rows = task.evaluate_stacked(tiny_model, copies)
    assert rows == [{"accuracy": 1.0, "recall": 1.0}] * 3
    plain = task.evaluate_stacked(tiny_model, copies)
    assert plain == [task.evaluate(tiny_model, hooks(c, tiny_model.info)) for c in copies]


# --- the real default model -------------------------------------------------------------------


@pytest.mark.slow
def test_prefix_reuse_and_stacking_are_exact_on_smollm2(smollm2):
    from analyses.sweeps.prefix import resume_is_exact

    task = make_task("ioi", {"n_prompts": 3})
    prepared = work.PreparedTask(smollm2, task, batch_size=3, layers={15})
    assert resume_is_exact(smollm2, prepared.batches[0].batch)
    units = [
        Unit("ioi", "zero", ((15, 4),)),
        Unit("ioi", "uniform", ((15, 5),)),  # GQA: heads 3..5 share a KV head
        Unit("ioi", "mean", ((15, 3),)),
    ]
    stacked = prepared.run_stacked(units, reuse=True)
    for unit, got in zip(units, stacked, strict=True):
        alone = task.evaluate(smollm2, hooks([unit.build(prepared.means)], smollm2.info))
        assert got["logit_diff"] == pytest.approx(alone["logit_diff"], abs=1e-4), unit.id
    assert len({round(s["logit_diff"], 4) for s in stacked}) == 3  # three different edits
