"""One contract over every registered probe family: what `headlab scan` relies on.

Each family, on the tiny random model: tidy rows of the results schema, layers and heads inside
the model, no NaN, the same numbers when run again under the same seed, and a test module of its
own that plants a known answer.
"""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from probes import engine
from probes.engine import RESULT_COLUMNS
from probes.families import registered_probes
from probes.inputs.prompts import load_jsonl, stdlib_docs_suite
from probes.models import load

FAMILIES = sorted(registered_probes())
TESTS = Path(__file__).resolve().parent
IMAGE_PROMPTS = TESTS.parents[2] / "data" / "prompts" / "images" / "images.jsonl"
IMAGE_ONLY = {"image_attention"}  # families that read image prompts: run on tiny-random-llava
SMALL = {  # defaults sized for a real model; the contract needs only a few tokens
    "detectors": {"n_sequences": 2, "half_len": 8},
    "retrieval": {"lengths": (96,), "depths": (50,), "max_new_tokens": 4},
    "divergence": {"answer_tokens": 4},
    "pattern_class": {"last_queries": 8, "min_length": 16, "block_size": 4},
}


def scan(model, name: str) -> pd.DataFrame:
    cls = registered_probes()[name]
    torch.manual_seed(0)
    probe = cls(model.info, cls.Params(**SMALL.get(name, {})))
    if name in IMAGE_ONLY:
        suite, max_tokens = load_jsonl(IMAGE_PROMPTS), 64
    else:
        suite, max_tokens = stdlib_docs_suite(n_prompts=3, words_per_prompt=40), 32
    return engine.run(model, [probe], suite, max_tokens=max_tokens, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def tiny_llava():
    return load("tiny-random-llava")


def test_the_registry_holds_every_builtin_family():
    assert FAMILIES == [
        "attention_stats", "detectors", "divergence", "future_attention", "image_attention",
        "pattern", "pattern_class", "retrieval", "sink", "top_keys",
    ]  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_family_rows_fit_the_schema_and_repeat_under_a_seed(tiny_model, request, name):
    model = request.getfixturevalue("tiny_llava") if name in IMAGE_ONLY else tiny_model
    first, second = scan(model, name), scan(model, name)
    assert list(first.columns) == RESULT_COLUMNS
    assert set(first["probe"]) <= {name}
    assert first["metric"].map(lambda m: isinstance(m, str) and m != "").all()
    layers, heads = first["layer"].dropna(), first["head"].dropna()
    assert layers.between(0, model.info.n_layers - 1).all()
    assert heads.between(0, model.info.n_heads - 1).all()
    assert not first["value"].map(lambda v: v is None or math.isnan(v)).any()
    pd.testing.assert_frame_equal(first, second)
    if name != "retrieval":  # a random model answers no NIAH sample, so it scores no head
        assert len(first) > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_has_a_planted_test_module(name):
    module = TESTS / f"test_{name}.py"
    assert module.is_file(), f"probe {name!r} has no tests/probes/families/test_{name}.py"
    text = module.read_text()
    assert "planting" in text or "planted" in text, f"{module.name} plants no known answer"


def own_docstring(cls: type) -> str:
    """`cls`'s own docstring; a dataclass's generated "Name(field: type, ...)" does not count."""
    doc = cls.__dict__.get("__doc__") or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc.strip()


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_and_its_parameters_say_what_they_are(name):
    cls = registered_probes()[name]
    assert own_docstring(cls), f"probe {name!r}: {cls.__name__} has no docstring"
    assert own_docstring(cls.Params), f"probe {name!r}: {cls.Params.__name__} has no docstring"


def test_the_docstring_check_can_fail():
    from dataclasses import dataclass

    @dataclass
    class Bare:
        x: int = 0

    assert own_docstring(Bare) == ""
