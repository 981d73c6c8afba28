import weakref

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from probes import bridge, engine
from probes.core import hook_names as hooks
from probes.core.errors import PromptTooLongError
from probes.families import sink as sinks
from probes.inputs.prompts import Prompt, PromptSuite
from probes.models import wrap
from probes.models.tiny import word_tokenizer

TEXTS = [
    "the cat went to the park",
    "mary gave the ball to john and the dog went to the store with the man",
    "one two",
    "the capital of france is paris and the river is long and green",
    "a",
]


def suite_of(texts):
    return PromptSuite("t", tuple(Prompt(f"p{i}", t) for i, t in enumerate(texts)), "test")


class PatternLifetimes:
    """Hooks that record, at each layer's pattern, how many earlier layers' patterns are alive."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.refs: list[weakref.ref] = []
        self.max_alive = 0
        self.seen = 0

    def hook(self, pattern: torch.Tensor, hook) -> None:
        alive = sum(ref() is not None for ref in self.refs)
        self.max_alive = max(self.max_alive, alive)
        self.refs.append(weakref.ref(pattern))
        self.seen += 1

    def hooks(self):
        return [(hooks.attn(layer, "pattern"), self.hook) for layer in range(self.n_layers)]


def tiny_gpt2():
    """GPT-2's bridge attention keeps its last pattern on the module (`_pattern`)."""
    tokenizer = word_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=16,
        n_layer=3,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return wrap(GPT2LMHeadModel(config), tokenizer, "tiny-gpt2")


@pytest.mark.parametrize("make_model", ["tiny_model", "gpt2"])
def test_no_more_than_one_layer_pattern_alive(make_model, tiny_model):
    model = tiny_model if make_model == "tiny_model" else tiny_gpt2()
    lifetimes = PatternLifetimes(model.info.n_layers)
    probe = sinks.SinkProbe(model.info)
    prompts = engine.tokenize_suite(model, suite_of(TEXTS), None)
    for batch in engine.batches(prompts, 3, model.tokenizer.pad_token_id, model.device):
        engine.run_batch(model, batch, [probe], lifetimes.hooks())
    assert lifetimes.seen == 2 * model.info.n_layers  # two batches, every layer
    # When layer l's pattern arrives, no earlier layer's pattern is still referenced.
    assert lifetimes.max_alive == 0
    assert all(ref() is None for ref in lifetimes.refs)
    assert all(getattr(m, "_pattern", None) is None for m in model.bridge.modules())


def test_gpt2_bridge_really_retains_patterns_without_the_engine():
    """The negative case: a plain bridge forward keeps every layer's pattern alive."""
    model = tiny_gpt2()
    lifetimes = PatternLifetimes(model.info.n_layers)
    tokens = torch.tensor([model.tokenize("the cat went to the park")])
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=lifetimes.hooks()):
        model.bridge(tokens, return_type=None)
    assert lifetimes.max_alive == model.info.n_layers - 1


def test_batched_padded_run_equals_one_prompt_at_a_time(tiny_model):
    suite = suite_of(TEXTS)

    def scan(batch_size):
        probe = sinks.SinkProbe(tiny_model.info, sinks.SinkParams(n_positions=4))
        return engine.run(tiny_model, [probe], suite, batch_size=batch_size, progress=False)

    together, alone = scan(4), scan(1)
    pd.testing.assert_frame_equal(together, alone, rtol=1e-5, atol=1e-6)


def test_bos_is_prepended_explicitly_once(tiny_model):
    ids = tiny_model.tokenize("the cat")
    assert ids[0] == tiny_model.tokenizer.bos_token_id
    assert ids.count(tiny_model.tokenizer.bos_token_id) == 1
    assert tiny_model.tokenize("the cat", prepend_bos=False) == ids[1:]


def test_batches_are_right_padded_with_true_lengths(tiny_model):
    prompts = engine.tokenize_suite(tiny_model, suite_of(TEXTS), None)
    pad = tiny_model.tokenizer.pad_token_id
    seen = []
    for batch in engine.batches(prompts, 2, pad, torch.device("cpu")):
        for row, length in enumerate(batch.lengths.tolist()):
            assert (batch.tokens[row, length:] == pad).all()
            assert batch.attention_mask[row].sum() == length
        seen.extend(batch.prompt_ids)
    assert sorted(seen) == sorted(p.id for p in prompts)


def test_max_tokens_truncates_and_is_checked_against_the_context(tiny_model):
    prompts = engine.tokenize_suite(tiny_model, suite_of(TEXTS), max_tokens=4)
    assert max(len(p.tokens) for p in prompts) == 4
    with pytest.raises(PromptTooLongError, match=r"max_tokens=1000 .*tiny-random"):
        engine.tokenize_suite(tiny_model, suite_of(TEXTS), max_tokens=1000)


def test_prompt_longer_than_context_names_the_prompt(tiny_model):
    long_text = " ".join(["the"] * 300)  # the tiny model's context is 256
    suite = PromptSuite("t", (Prompt("short", "the cat"), Prompt("novel", long_text)), "f.jsonl")
    with pytest.raises(PromptTooLongError, match=r"'novel' of f.jsonl has 301 tokens.*256"):
        engine.tokenize_suite(tiny_model, suite, max_tokens=None)


def test_run_rejects_no_probes_and_bad_batch_size(tiny_model):
    probe = sinks.SinkProbe(tiny_model.info)
    with pytest.raises(ValueError, match="no probes"):
        engine.run(tiny_model, [], suite_of(TEXTS))
    with pytest.raises(ValueError, match="batch_size"):
        engine.run(tiny_model, [probe], suite_of(TEXTS), batch_size=0)


def test_forward_runs_under_inference_mode(tiny_model):
    modes = []
    hook = (hooks.attn(0, "pattern"), lambda pattern, hook: modes.append(pattern.is_inference()))
    prompts = engine.tokenize_suite(tiny_model, suite_of(TEXTS[:1]), None)
    (batch,) = engine.batches(prompts, 1, 0, torch.device("cpu"))
    bridge.forward(
        tiny_model, batch.tokens, [hook], attention_mask=batch.attention_mask, return_type=None
    )
    assert modes == [True]


def test_rows_outside_the_results_schema_are_refused(tiny_model):
    from probes.core.schema import SchemaError
    from probes.engine.runner import checked_rows

    class Stray:
        name = "sink"

        def __init__(self, rows):
            self._rows = rows

        def rows(self):
            return self._rows

    assert checked_rows(Stray([{"metric": "alpha", "value": 1.0}])) == [
        {"metric": "alpha", "value": 1.0}
    ]
    with pytest.raises(SchemaError, match="does not declare"):
        checked_rows(Stray([{"metric": "alfa", "value": 1.0}]))
    with pytest.raises(SchemaError, match="columns"):
        checked_rows(Stray([{"metric": "alpha", "value": 1.0, "posiiton": 3}]))
