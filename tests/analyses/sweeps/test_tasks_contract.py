"""One contract over every registered sweep task: what `headlab sweep` relies on.

Each task, on the tiny random model with small parameters: the measures it declares, finite and
the same when evaluated again under the same seed; stacked copies scoring as one evaluation per
copy; unknown parameters refused with a `TaskError` naming the task and the parameter; and a
test elsewhere in this folder that plants a known answer.
"""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from analyses.interventions.kinds import HeadAblation, HeadScale, hooks
from analyses.sweeps import generation  # noqa: F401  tasks in modules of their own register
from analyses.sweeps.tasks import TASKS, TaskError, make_task

TESTS = Path(__file__).resolve().parent
NAMES = sorted(TASKS)
PAIRS = [  # the tiny model's tokenizer knows these words (the built-in IOI names are unknown)
    {"id": "a", "text": "red the cat went to the park", "correct": "red", "incorrect": "blue"},
    {"id": "b", "text": "blue a dog went to the house of", "correct": "blue", "incorrect": "green"},
]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, dict]:
    """Parameters per task sized for the tiny model (the defaults are sized for a real one)."""
    pairs = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    prompts = pairs.parent / "prompts.jsonl"  # text prompts: the tiny model reads no images
    prompts.write_text(
        "".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in PAIRS)
    )
    return {
        "generation": {"prompts": str(prompts), "max_new_tokens": 3},
        "lm": {"n_prompts": 2, "max_tokens": 16},
        "ioi": {"path": str(pairs)},
        "niah": {"lengths": [96], "depths": [50], "max_new_tokens": 3},
    }


def test_the_registry_holds_every_builtin_task(small):
    assert NAMES == ["generation", "ioi", "lm", "niah"]
    assert sorted(small) == NAMES, "give each new task small contract parameters"
    with pytest.raises(
        TaskError, match=r"unknown task 'nope'; registered tasks: generation, ioi, lm, niah"
    ):
        make_task("nope")


@pytest.mark.parametrize("name", NAMES)
def test_measures_are_declared_finite_and_repeat_under_a_seed(tiny_model, small, name):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        task = make_task(name, small[name])  # a fresh task: nothing cached from the first run
        runs.append(task.evaluate(tiny_model, []))
    first, second = runs
    assert first == second
    assert set(first) == set(task.higher_is_better)
    assert task.objective in first
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values()), first


@pytest.mark.parametrize("name", NAMES)
def test_stacked_copies_score_as_one_evaluation_each(tiny_model, small, name):
    task = make_task(name, small[name])
    copies = [[], [HeadScale(((0, 1),), 2.0)], [HeadAblation(((1, 2),), "zero")]]
    stacked = task.evaluate_stacked(tiny_model, copies)
    alone = [task.evaluate(tiny_model, hooks(c, tiny_model.info)) for c in copies]
    assert len(stacked) == len(copies)
    for got, want in zip(stacked, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameters_are_refused_naming_task_and_parameter(small, name):
    with pytest.raises(TaskError, match=rf"plan\.toml: task '{name}' has no parameter\(s\) "
                                        r"\['bogus'\]"):  # fmt: skip
        make_task(name, {**small[name], "bogus": 1}, where="plan.toml: ")


def _planted_tests_naming(task: str, cls_name: str) -> list[str]:
    """Test functions in this folder, outside this file, that plant a known answer and name
    `task` (a string constant such as make_task("lm", ...)) or its class."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            strings = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)}
            planted = "plant" in (ast.get_source_segment(source, node) or "")
            if planted and (task in strings or cls_name in names):
                found.append(f"{path.name}::{node.name}")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_each_task_has_a_planted_known_answer_test(name):
    cls = TASKS[name]
    assert _planted_tests_naming(name, cls.__name__), (
        f"task {name!r} ({cls.__name__}) has no test in {TESTS} that plants a known answer"
    )
