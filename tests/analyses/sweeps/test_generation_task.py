"""The "generation" sweep task: planted answers with known measures, and a VHR strength sweep
on tiny-random-llava's image prompts (α = 1 harmless, α = 2 changing the answers)."""

import json

import pytest
import torch

from analyses.results import store
from analyses.sweeps import runner as sweep
from analyses.sweeps.generation import GenerationTask
from analyses.sweeps.plan_file import plan_from_dict
from analyses.sweeps.tasks import TaskError, make_task
from probes.decoding import generate
from probes.models import load
from tests import planting

TEXTS = ["red the cat went to the park", "blue a dog went to the house of"]


@pytest.fixture
def text_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n"
                            for i, t in enumerate(TEXTS)))  # fmt: skip
    return path


def test_planted_answers_give_known_measures(tiny_model, text_prompts):
    task = make_task("generation", {"prompts": str(text_prompts), "max_new_tokens": 3})
    assert isinstance(task, GenerationTask)
    clean = task.evaluate(tiny_model, [])
    assert clean["same_answer"] == 1.0 and clean["token_agreement"] == 1.0
    # the clean answer is greedy, so its log-probability is each step's largest one
    expected = []
    for text in TEXTS:
        tokens = tiny_model.tokenize(text)
        out = generate(tiny_model, tokens, max_new_tokens=3, keep_logits=True)
        expected.append(out.logits.log_softmax(-1).max(-1).values.mean().item())
    assert clean["clean_logprob"] == pytest.approx(sum(expected) / 2, abs=1e-5)
    # plant: every decoding step emits a token no clean answer holds (emit's first step is
    # the prefill's one-position logits); the teacher-forced pass is left alone
    answers = [p.clean for p in task._prompts(tiny_model)]
    other = next(t for t in range(5, 500) if all(t not in a for a in answers))
    planted = task.evaluate(tiny_model, [planting.emit([0, other, other, other])])
    assert planted["same_answer"] == 0.0 and planted["token_agreement"] == 0.0
    assert planted["clean_logprob"] == pytest.approx(clean["clean_logprob"], abs=1e-6)


def test_bad_parameters_name_the_task(tmp_path):
    with pytest.raises(TaskError, match=r"task 'generation'.*prompts must be a prompt JSONL"):
        make_task("generation", {"prompts": str(tmp_path / "none.jsonl")})
    with pytest.raises(TaskError, match=r"max_new_tokens must be at least 1"):
        make_task("generation", {"max_new_tokens": 0})


def test_a_vhr_sweep_on_image_prompts(tmp_path):
    llava = load("tiny-random-llava")
    plan = plan_from_dict(
        {
            "model": "tiny-random-llava",
            "tasks": {"generation": {"max_new_tokens": 8}},
            "strength": [{"kind": "vhr", "values": [1.0, 2.0, 4.0], "heads": [[0, 2], [1, 3]]}],
        }
    )
    table = store.read_table(
        sweep.run(sweep.SweepConfig(plan, tmp_path, progress=False), model=llava)
    )
    same = table[table["metric"] == "generation.same_answer"].set_index("condition")["value"]
    assert same["vhr=1|heads:L0H2,L1H3"] == 1.0  # α = 1: every answer as clean
    assert min(same["vhr=2|heads:L0H2,L1H3"], same["vhr=4|heads:L0H2,L1H3"]) < 1.0
    harm = table[table["metric"] == "generation.clean_logprob.harm"].set_index("condition")
    assert abs(harm.loc["vhr=1|heads:L0H2,L1H3", "value"]) < 1e-6
    assert torch.isfinite(torch.tensor(table["value"].to_numpy())).all()
