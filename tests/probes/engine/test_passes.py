"""Probes that bring their own prompts (`Probe.prompts`) get passes of their own."""

from dataclasses import dataclass

import pytest

from probes import engine
from probes.core import hook_names as hooks
from probes.core.errors import PromptTooLongError
from probes.core.probe import Probe
from probes.core.types import ProbeParams, TokenizedPrompt
from probes.inputs.prompts import Prompt, PromptSuite

SUITE = PromptSuite(
    "t",
    (Prompt("long", "the cat went to the park and the dog"), Prompt("short", "mary gave")),
    "test",
)


@dataclass(frozen=True)
class NoParams(ProbeParams):
    pass


class Recorder(Probe):
    """Records the prompts and widths of every batch it sees; `own` are its own prompts."""

    name = "recorder"
    Params = NoParams

    def __init__(self, info, own=None) -> None:
        super().__init__(info)
        self.own = own
        self.batches: list[tuple[str, ...]] = []
        self.forwards = 0

    def prompts(self, model, suite, max_tokens):
        return self.own

    def hooks(self, batch):
        self.batches.append(batch.prompt_ids)

        def count(pattern, hook):
            self.forwards += 1

        return [(hooks.attn(0, "pattern"), count)]

    def rows(self):
        return [{"metric": "batches", "layer": 0, "head": 0, "value": float(len(self.batches))}]


def own_prompts(*lengths: int) -> list[TokenizedPrompt]:
    return [TokenizedPrompt(f"own-{i}", tuple([1] + [5] * (n - 1))) for i, n in enumerate(lengths)]


def test_suite_readers_and_own_prompt_probes_each_see_only_their_prompts(tiny_model):
    reader = Recorder(tiny_model.info)
    own = Recorder(tiny_model.info, own_prompts(9, 3, 6))
    table = engine.run(tiny_model, [reader, own], SUITE, batch_size=2, progress=False)
    assert reader.batches == [("short", "long")]  # the suite, sorted by length as before
    assert own.batches == [("own-0", "own-1"), ("own-2",)]  # own prompts, in the order given
    assert list(table.probe) == ["recorder", "recorder"]


def test_probes_supplying_equal_prompts_share_one_pass(tiny_model):
    first = Recorder(tiny_model.info, own_prompts(4, 4))
    second = Recorder(tiny_model.info, own_prompts(4, 4))
    other = Recorder(tiny_model.info, own_prompts(5))
    engine.run(tiny_model, [first, second, other], SUITE, batch_size=2, progress=False)
    assert first.batches == second.batches == [("own-0", "own-1")]
    assert other.batches == [("own-0",)]
    plan = engine.plan_passes(tiny_model, [first, second, other], SUITE, None)
    assert [len(p.probes) for p in plan] == [2, 1]


def test_an_own_prompt_longer_than_the_context_names_the_probe(tiny_model):
    probe = Recorder(tiny_model.info, own_prompts(tiny_model.info.n_ctx + 1))
    with pytest.raises(PromptTooLongError, match=r"probe 'recorder'.*own-0.*tiny-random"):
        engine.run(tiny_model, [probe], SUITE, progress=False)


def test_batches_keep_the_given_order_only_when_asked():
    prompts = own_prompts(5, 2, 7)
    sorted_ids = [b.prompt_ids for b in engine.batches(prompts, 2, 0, "cpu")]
    kept_ids = [b.prompt_ids for b in engine.batches(prompts, 2, 0, "cpu", keep_order=True)]
    assert sorted_ids == [("own-1", "own-0"), ("own-2",)]
    assert kept_ids == [("own-0", "own-1"), ("own-2",)]


def test_a_huge_prompt_is_cut_before_it_is_tokenized_whole(tiny_model, monkeypatch):
    from probes.engine.passes import tokenize_suite

    huge = "the cat went to the park " * 800_000  # 20 MB
    seen = []
    tokenize = tiny_model.tokenize

    def recording(text, *args, **kwargs):
        seen.append(len(text))
        return tokenize(text, *args, **kwargs)

    monkeypatch.setattr(tiny_model, "tokenize", recording)
    suite = PromptSuite("huge", (Prompt("big", huge),), "test")
    (prompt,) = tokenize_suite(tiny_model, suite, max_tokens=64)
    assert prompt.tokens == tuple(tokenize(huge[:10_000])[:64])
    assert max(seen) < 10_000  # characters, not the 20 MB
    with pytest.raises(PromptTooLongError, match="more than 256 tokens"):
        tokenize_suite(tiny_model, suite, max_tokens=None)
    assert max(seen) < 100_000


@pytest.mark.slow
def test_a_cut_prompt_keeps_the_tokens_of_the_whole_text_on_smollm2(smollm2):
    from probes.engine.passes import tokenize_prefix
    from probes.inputs.prompts import stdlib_docs_text

    text = "\n".join(stdlib_docs_text())[:200_000]
    whole = smollm2.tokenize(text)
    for limit in (16, 256, 4096):
        cut, complete = tokenize_prefix(smollm2, text, limit)
        assert not complete and cut[:limit] == whole[:limit]
