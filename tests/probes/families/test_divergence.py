import pandas as pd
import pytest
import torch

from probes import engine
from probes.core import hook_names as hooks
from probes.families.divergence import (
    DivergenceParams,
    DivergenceProbe,
    SegmentError,
    head_divergence,
    split_segment,
    top_k_mean,
)
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting

TEXTS = [
    "mary gave the ball <segment> the cat went to the park and the dog </segment> to john and "
    "the man went to the store",
    "<segment> the capital of france is paris </segment> and the river is long and green",
    "the old book of the city was on the river in the house that they made before the day",
]
SUITE = PromptSuite("t", tuple(Prompt(f"p{i}", t) for i, t in enumerate(TEXTS)), "test")


def run(model, plants=(), params=None, batch_size=3) -> pd.DataFrame:
    probe = DivergenceProbe(model.info, params or DivergenceParams(answer_tokens=4))
    with planting.planted(model, plants):
        return engine.run(
            model, [probe], SUITE, batch_size=batch_size, max_tokens=None, progress=False
        )


def vhd(rows: pd.DataFrame) -> dict[tuple[int, int], float]:
    picked = rows[rows.metric == "vhd"]
    return {(int(r.layer), int(r["head"])): r.value for _, r in picked.iterrows()}


# --- pure pieces --------------------------------------------------------------------------------


def test_head_divergence_closed_forms():
    a = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # [pos, head, d_head]
    b = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])
    torch.testing.assert_close(head_divergence(a, b, "l2"), torch.tensor([[5.0, 5**0.5]]))
    torch.testing.assert_close(head_divergence(a, a, "l2"), torch.zeros(1, 2))
    cosine = head_divergence(a, torch.tensor([[[6.0, 8.0], [0.0, 1.0]]]), "cosine")
    torch.testing.assert_close(cosine, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="unknown distance"):
        head_divergence(a, b, "kl")


def test_t_vhd_is_the_mean_of_the_top_k_heads_per_token():
    divergence = torch.tensor([[[1.0, 0.0], [5.0, 2.0]], [[3.0, 9.0], [4.0, 1.0]]])  # [l, h, pos]
    torch.testing.assert_close(top_k_mean(divergence, 2), torch.tensor([4.5, 5.5]))
    torch.testing.assert_close(top_k_mean(divergence, 10), divergence.flatten(0, 1).mean(0))


def test_split_segment_and_its_errors():
    assert split_segment("a <s> b </s> c", "<s>", "</s>", "x") == ("a ", " b ", " c")
    assert split_segment("no markers", "<s>", "</s>", "x") == ("no markers",)
    for bad in ["a <s> b", "a </s> b <s> c", "<s> a </s> <s> b </s>"]:
        with pytest.raises(SegmentError, match="prompt 7"):
            split_segment(bad, "<s>", "</s>", "prompt 7")


def test_layouts_remove_exactly_the_segment(tiny_model):
    probe = DivergenceProbe(tiny_model.info, DivergenceParams(answer_tokens=4))
    prompts = {p.id: p.tokens for p in probe.prompts(tiny_model, SUITE, None)}
    ids = tiny_model.tokenize
    before, segment, after = (
        ids("mary gave the ball"),
        ids("the cat went to the park and the dog", prepend_bos=False),
        ids("to john and the man went to the store", prepend_bos=False),
    )
    assert prompts["p0#with"] == tuple(before + segment + after)
    assert prompts["p0#without"] == tuple(before + after)
    unmarked = ids(TEXTS[2])  # default: the first half after BOS is the segment
    end = 1 + (len(unmarked) - 1) // 2
    assert prompts["p2#without"] == tuple(unmarked[:1] + unmarked[end:])
    keys = list(prompts)
    assert keys[0::2] == [k.replace("without", "with") for k in keys[1::2]]  # pairs adjacent


def test_a_prompt_with_nothing_after_its_segment_is_refused(tiny_model):
    suite = PromptSuite("t", (Prompt("bad", "the cat <segment> went </segment>"),), "file.jsonl")
    probe = DivergenceProbe(tiny_model.info)
    with pytest.raises(SegmentError, match=r"prompt 'bad' of file\.jsonl"):
        probe.prompts(tiny_model, suite, None)


# --- the definition on full activations ----------------------------------------------------------


def reference_divergence(model, params):
    """VHD per head and T-VHD per answer token from two separate unbatched runs per prompt."""
    probe = DivergenceProbe(model.info, params)  # only for its layouts
    probe.prompts(model, SUITE, None)
    per_prompt = {}
    for layout, variant in probe.variants.values():
        tokens = torch.tensor(
            [layout.with_segment if variant == "with" else layout.without_segment]
        )
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
        start = layout.answer_start(variant)
        z = torch.stack(
            [
                cache[hooks.attn(layer, "z")][0, start : start + layout.n_answer]
                for layer in range(model.info.n_layers)
            ]
        )  # [layer, answer, head, d]
        per_prompt.setdefault(layout.prompt_id, {})[variant] = z
    divergence = {
        prompt: (z["with"] - z["without"]).norm(dim=-1).permute(0, 2, 1)  # [layer, head, answer]
        for prompt, z in per_prompt.items()
    }
    return divergence


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_streaming_equals_two_separate_runs(tiny_model, batch_size):
    params = DivergenceParams(answer_tokens=4, top_k=3)
    rows = run(tiny_model, params=params, batch_size=batch_size)  # 3: pairs straddle batches
    divergence = reference_divergence(tiny_model, params)
    mean = torch.cat(list(divergence.values()), dim=-1).mean(-1)
    for (layer, head), value in vhd(rows).items():
        assert value == pytest.approx(mean[layer, head].item(), rel=1e-4, abs=1e-6)
    t_vhd = rows[rows.metric == "t_vhd"]
    prompt_of = t_vhd["prompt"]
    for prompt, values in divergence.items():
        picked = t_vhd[prompt_of == prompt]
        expected = values.flatten(0, 1).topk(3, dim=0).values.mean(0)
        assert picked.value.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    p0 = t_vhd[t_vhd["prompt"] == "p0"]
    assert list(p0["token"]) == ["went", "to", "the", "store"]
    assert t_vhd["condition"].isna().all()  # per-token rows carry prompt and token, not a condition


# --- planted heads ------------------------------------------------------------------------------


def test_a_head_that_never_reads_the_segment_has_divergence_zero(tiny_model):
    """Layer 0 reads token embeddings only: a head attending to its own token, or to BOS, gives
    the same output with and without the segment; a uniform head averages over it."""
    plants = [
        planting.attend_to(0, 0, lambda q: q),
        planting.bos_head(0, 1),
        planting.uniform_head(0, 2),
    ]
    scores = vhd(run(tiny_model, plants))
    assert scores[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert scores[(0, 1)] == pytest.approx(0.0, abs=1e-5)
    assert scores[(0, 2)] > 100 * max(scores[(0, 0)], scores[(0, 1)], 1e-7)
    assert min(v for (layer, _), v in scores.items() if layer == 1) > 1e-3  # later layers differ


@pytest.mark.slow
def test_smollm2_answer_tokens_that_need_the_document_diverge_most(smollm2):
    """The paper's finding in text: tokens grounded in the removed context (the digits, which
    only the document supplies) have higher T-VHD than the template token before them."""
    text = (
        "<segment>The secret number of the blue house is 4721. The red house has no "
        "number.</segment> Question: what is the secret number of the blue house? Answer: 4721"
    )
    suite = PromptSuite("t", (Prompt("doc", text),), "t")
    probe = DivergenceProbe(smollm2.info, DivergenceParams(answer_tokens=6))
    rows = engine.run(smollm2, [probe], suite, max_tokens=None, progress=False)
    scores = rows[rows.metric == "vhd"]
    assert len(scores) == 270 and (scores.value >= 0).all()
    t_vhd = rows[rows.metric == "t_vhd"]
    tokens = list(t_vhd["token"])
    assert tokens == [":", " ", "4", "7", "2", "1"]
    digits = t_vhd.value[[token.isdigit() for token in tokens]]
    assert digits.min() > t_vhd.value.iloc[0]
