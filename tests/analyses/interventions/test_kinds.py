import copy

import pytest
import torch

from analyses.interventions.edits import act_sinks, redistribute, soft_pag
from analyses.interventions.kinds import (
    AttentionRedistribution,
    HeadAblation,
    HeadScale,
    SoftPAG,
    hooks,
    stacked_hooks,
)
from analyses.interventions.means import head_means
from probes.core import hook_names as hook_names
from probes.core.types import TokenizedPrompt
from probes.engine import batches
from tests import planting
from tests.tensors import random_causal_patterns

TEXT = "mary gave the ball to john and the dog went to the store with the man"


def sink_heavy_patterns(*shape: int, seed: int = 0) -> torch.Tensor:
    """Causal patterns with strong columns at 0, 3 and 6, so ACT finds hidden sinks."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=generator)
    scores[..., [0, 3, 6]] += torch.tensor([4.0, 2.5, 2.0])
    size = shape[-1]
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


# --- test-only transcriptions of the authors' code --------------------------------------------


def act_reference(head_map: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    """GATECH-EIC/ACT models/llama_modelling_aug.py :: atten_process_eval, one (q, k) head map."""
    modified_head = head_map.clone()
    shape = modified_head.shape[0]
    indices = torch.nonzero(
        torch.where(torch.sum(modified_head, dim=0) / torch.arange(shape, 0, -1) > threshold, 1, 0)
    )
    indices = indices[1:]
    copied_attention_map = copy.deepcopy(modified_head.detach())
    available_weights = modified_head[:, indices].sum(dim=1) * (1 - beta)
    modified_head[:, indices] *= beta
    copied_attention_map[1:, indices] *= 0
    ratios = copied_attention_map / torch.sum(copied_attention_map, dim=1, keepdim=True)
    modified_head = modified_head + available_weights * ratios
    modified_head[0, 0] = 1
    return modified_head


def var_reference(attn_rows: torch.Tensor, sinks: list[int], im: int, pa: int, p: float):
    """MICV-yonsei/VisAttnSink src/logic/logic.py :: VARProcessor.attn_redist, selected rows."""
    selected_attn_map = attn_rows.clone()
    copied_attention_map = attn_rows.clone()
    vis_indices = [i for i in sinks if im <= i < im + pa]
    text_indices = [i for i in sinks if not im <= i < im + pa]
    selected_attn_map[:, text_indices] *= p
    selected_attn_map[:, vis_indices] *= p
    weight_budget_vis = copied_attention_map[:, vis_indices].sum(dim=1) * (1 - p)
    weight_budget_text = copied_attention_map[:, text_indices].sum(dim=1) * (1 - p)
    copied_attention_map[:, vis_indices] *= 0
    image = copied_attention_map[:, im : im + pa]
    ratios_vis = image / image.sum(dim=1, keepdim=True)
    selected_attn_map[:, im : im + pa] += (weight_budget_vis + weight_budget_text).view(-1, 1) * (
        ratios_vis
    )
    return selected_attn_map


# --- pure maths -------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.0, 0.4, 0.6, 1.0])
def test_redistribution_keeps_row_sums_and_moves_exactly_the_stated_mass(keep):
    pattern = random_causal_patterns(2, 3, 10, 10)
    positions = torch.arange(10)
    sources = torch.isin(positions, torch.tensor([0, 4]))
    targets = (positions >= 5) & (positions < 9)
    out = redistribute(pattern, sources, targets, keep)
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 3, 10))
    rows = slice(5, None)  # rows that can see the targets
    before_src = pattern[..., rows, :][..., sources].sum(-1)
    before_tgt = pattern[..., rows, :][..., targets].sum(-1)
    torch.testing.assert_close(out[..., rows, :][..., sources].sum(-1), keep * before_src)
    torch.testing.assert_close(
        out[..., rows, :][..., targets].sum(-1), before_tgt + (1 - keep) * before_src
    )
    # Within the targets the gain is in proportion to the original attention.
    seeing_all = slice(8, None)
    ratio = out[..., seeing_all, :][..., targets] / pattern[..., seeing_all, :][..., targets]
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    others = ~(sources | targets)
    torch.testing.assert_close(out[..., rows, :][..., others], pattern[..., rows, :][..., others])
    # Rows that see no target have nowhere to put the mass and stay as they are.
    torch.testing.assert_close(out[..., :5, :], pattern[..., :5, :])


def test_redistribution_matches_act_reference_code():
    pattern = sink_heavy_patterns(4, 3, 12, 12, seed=3)
    out = redistribute(pattern, act_sinks(pattern, None, 0.1), torch.ones(12, dtype=bool), 0.4)
    found_hidden = False
    for b in range(4):
        for h in range(3):
            torch.testing.assert_close(out[b, h], act_reference(pattern[b, h], 0.4, 0.1))
            found_hidden |= bool(act_sinks(pattern, None, 0.1)[b, h].any())
    assert found_hidden, "the test patterns must contain hidden sinks for this to test anything"
    torch.testing.assert_close(out.sum(-1), torch.ones(4, 3, 12))


def test_act_sinks_spare_the_first_detected_position_and_respect_padding():
    pattern = sink_heavy_patterns(1, 2, 12, 12, seed=5)
    detected = act_sinks(pattern, None, 0.1, spare_first=False)
    spared = act_sinks(pattern, None, 0.1)
    for h in range(2):
        found = detected[0, h].nonzero().flatten().tolist()
        assert len(found) >= 2
        assert spared[0, h].nonzero().flatten().tolist() == found[1:]
    # A right-padded copy detects on its real prefix exactly what the unpadded one does.
    short = pattern[:, :, :8, :8] / pattern[:, :, :8, :8].sum(-1, keepdim=True)
    padded = torch.cat([short, torch.full((1, 2, 8, 4), 0.3)], dim=-1)
    padded = torch.cat([padded, torch.full((1, 2, 4, 12), 0.5)], dim=-2)
    got = act_sinks(padded, torch.tensor([8]), 0.1)
    assert torch.equal(got[..., :8], act_sinks(short, None, 0.1))
    assert not got[..., 8:].any()


def test_redistribution_matches_var_reference_code():
    pattern = sink_heavy_patterns(1, 1, 16, 16, seed=7)[0, 0]
    im, pa, sinks, p = 2, 8, [0, 3, 6], 0.6
    intervention = AttentionRedistribution.var([(0, 0)], sinks=sinks, image=(im, im + pa), p=p)
    edit = intervention.layer_edits(0, [0])[0][1]
    out = edit(pattern[None, None], None)[0, 0]
    rows = slice(im + pa, None)  # VAR edits the queries after the image in the prefill
    torch.testing.assert_close(out[rows], var_reference(pattern[rows], sinks, im, pa, p))
    torch.testing.assert_close(out[: im + pa], pattern[: im + pa])
    torch.testing.assert_close(out.sum(-1), torch.ones(16))


def test_soft_pag_endpoints_and_row_sums():
    pattern = random_causal_patterns(2, 3, 7, 7)
    assert torch.equal(soft_pag(pattern, 0.0), pattern)
    torch.testing.assert_close(soft_pag(pattern, 1.0), torch.eye(7).expand(2, 3, 7, 7))
    torch.testing.assert_close(soft_pag(pattern, 0.3).sum(-1), torch.ones(2, 3, 7))
    # With a KV cache the queries are the last positions: identity is the shifted diagonal.
    cached = random_causal_patterns(1, 1, 9, 9)[..., 6:, :]
    torch.testing.assert_close(soft_pag(cached, 1.0)[0, 0], torch.eye(9)[6:])


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="mode"):
        HeadAblation(((0, 0),), "ones")
    with pytest.raises(ValueError, match="needs `means`"):
        HeadAblation(((0, 0),), "mean")
    with pytest.raises(ValueError, match="more than once"):
        HeadScale(((0, 1), (0, 1)), 2.0)
    with pytest.raises(ValueError, match=r"SoftPAG.u"):
        SoftPAG(((0, 0),), 1.5)
    with pytest.raises(ValueError, match="keep"):
        AttentionRedistribution(((0, 0),), keep=-0.1)


# --- on a model -------------------------------------------------------------------------------


def run(model, fwd_hooks, text=TEXT, capture=()):
    tokens = torch.tensor([model.tokenize(text)])
    captured = {}

    def keep(name):
        def hook(x, hook):
            captured[name] = x.detach().clone()

        return hook

    extra = [(name, keep(name)) for name in capture]
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[*fwd_hooks, *extra]):
        logits = model.bridge(tokens)
    return logits, captured


def test_empty_and_identity_interventions_leave_logits_identical(tiny_model):
    clean, _ = run(tiny_model, [])
    assert hooks([], tiny_model.info) == []
    heads = ((0, 1), (1, 3))
    for identity in (HeadScale(heads, 1.0), SoftPAG(heads, 0.0)):
        got, _ = run(tiny_model, hooks([identity], tiny_model.info))
        assert torch.equal(got, clean), identity.label
    # The negative case: the same objects with a real strength do change the logits.
    for real in (HeadScale(heads, 2.0), SoftPAG(heads, 0.5)):
        got, _ = run(tiny_model, hooks([real], tiny_model.info))
        assert not torch.allclose(got, clean, atol=1e-4), real.label


@pytest.mark.parametrize("mode", ["zero", "mean", "uniform"])
def test_ablation_is_per_head_even_for_gqa_siblings(tiny_model, mode):
    info = tiny_model.info
    layer, head = 1, 2
    sibling = head ^ 1  # shares head's KV head (4 query heads over 2 KV heads)
    assert info.kv_head(sibling) == info.kv_head(head)
    means = torch.randn(info.n_layers, info.n_heads, info.d_head)
    ablation = HeadAblation(((layer, head),), mode, means=means)
    names = [
        hook_names.attn(layer, "z"),
        hook_names.attn(layer, "pattern"),
        hook_names.attn(layer, "v"),
    ]
    _, clean = run(tiny_model, [], capture=names)
    _, got = run(tiny_model, hooks([ablation], info), capture=names)
    z_clean, z_got = clean[names[0]][0], got[names[0]][0]
    others = [h for h in range(info.n_heads) if h != head]
    torch.testing.assert_close(z_got[:, others], z_clean[:, others], rtol=0, atol=0)
    if mode == "zero":
        assert torch.equal(z_got[:, head], torch.zeros_like(z_got[:, head]))
    elif mode == "mean":
        torch.testing.assert_close(z_got[:, head], means[layer, head].expand_as(z_got[:, head]))
    else:  # uniform over the visible keys: the pattern row is 1/(i+1), z the running mean of V
        length = z_got.shape[0]
        uniform = torch.ones(length, length).tril()
        uniform = uniform / uniform.sum(-1, keepdim=True)
        torch.testing.assert_close(got[names[1]][0, head], uniform)
        torch.testing.assert_close(got[names[1]][0, others], clean[names[1]][0, others])
        v = clean[names[2]][0, :, info.kv_head(head)]  # [pos, d_head]
        torch.testing.assert_close(z_got[:, head], uniform @ v)
    assert not torch.allclose(z_got[:, head], z_clean[:, head])


def test_scale_multiplies_only_the_chosen_heads_output(tiny_model):
    name = hook_names.attn(0, "z")
    _, clean = run(tiny_model, [], capture=[name])
    _, got = run(tiny_model, hooks([HeadScale(((0, 3),), 2.0)], tiny_model.info), capture=[name])
    torch.testing.assert_close(got[name][..., 3, :], 2 * clean[name][..., 3, :])
    torch.testing.assert_close(got[name][..., :3, :], clean[name][..., :3, :], rtol=0, atol=0)


def test_pattern_edits_on_the_model_keep_rows_summing_to_one(tiny_model):
    info = tiny_model.info
    name = hook_names.attn(1, "pattern")
    heads = ((1, 0), (1, 2))
    for intervention in (
        SoftPAG(heads, 1.0),
        AttentionRedistribution.act(heads, beta=0.4, threshold=0.05),
        AttentionRedistribution(heads, keep=0.6, sources=(0,), targets=(3, 8)),
    ):
        _, clean = run(tiny_model, [], capture=[name])
        _, got = run(tiny_model, hooks([intervention], info), capture=[name])
        torch.testing.assert_close(got[name].sum(-1), torch.ones_like(got[name].sum(-1)))
        torch.testing.assert_close(got[name][:, [1, 3]], clean[name][:, [1, 3]])
        assert not torch.allclose(got[name][:, [0, 2]], clean[name][:, [0, 2]])
    _, got = run(tiny_model, hooks([SoftPAG(heads, 1.0)], info), capture=[name])
    size = got[name].shape[-1]
    torch.testing.assert_close(got[name][0, [0, 2]], torch.eye(size).expand(2, size, size))


def test_a_list_of_interventions_composes_in_order(tiny_model):
    info = tiny_model.info
    first, second = HeadScale(((0, 1),), 3.0), HeadAblation(((0, 1), (1, 0)), "zero")
    name = hook_names.attn(0, "z")
    # scale then zero leaves zero; zero then scale also zero — but scale then scale compounds.
    both, got = run(tiny_model, hooks([first, HeadScale(((0, 1),), 0.5)], info), capture=[name])
    _, clean = run(tiny_model, [], capture=[name])
    torch.testing.assert_close(got[name][..., 1, :], 1.5 * clean[name][..., 1, :])
    combined, _ = run(tiny_model, hooks([first, second], info))
    alone, _ = run(tiny_model, hooks([second], info))
    torch.testing.assert_close(combined, alone)  # zeroing after scaling wipes the scaling
    assert not torch.allclose(both, alone)


def test_stacked_copies_equal_separate_forward_passes(tiny_model):
    info = tiny_model.info
    prompts = [
        TokenizedPrompt(f"p{i}", tuple(tiny_model.tokenize(t)))
        for i, t in enumerate([TEXT, "the cat went to the park", "one two three"])
    ]
    batch = next(batches(prompts, 3, tiny_model.tokenizer.pad_token_id, tiny_model.device))
    copies = [
        [HeadAblation(((0, 1),), "zero")],
        [HeadAblation(((1, 2),), "uniform"), HeadScale(((1, 0),), 2.0)],
        [],
        [AttentionRedistribution.act(((1, 3),), threshold=0.05)],
    ]
    bridge = tiny_model.bridge
    tokens = batch.tokens.repeat(len(copies), 1)
    mask = batch.attention_mask.repeat(len(copies), 1)
    with torch.inference_mode(), bridge.hooks(fwd_hooks=stacked_hooks(copies, info, batch.lengths)):
        stacked = bridge(tokens, attention_mask=mask)
    real = batch.attention_mask.bool()
    for index, interventions in enumerate(copies):
        with (
            torch.inference_mode(),
            bridge.hooks(fwd_hooks=hooks(interventions, info, batch.lengths)),
        ):
            alone = bridge(batch.tokens, attention_mask=batch.attention_mask)
        part = stacked[index * 3 : (index + 1) * 3]
        torch.testing.assert_close(part[real], alone[real], atol=1e-5, rtol=1e-5)


def test_head_out_of_range_names_the_model(tiny_model):
    with pytest.raises(ValueError, match=r"L2H0 does not exist in model 'tiny-random'"):
        hooks([HeadAblation(((2, 0),))], tiny_model.info)
    bad_means = torch.zeros(1, 4, 8)
    with pytest.raises(ValueError, match="means has shape"):
        hooks([HeadAblation(((0, 0),), "mean", means=bad_means)], tiny_model.info)


# --- planted ground truth: one head carries the task ------------------------------------------


def logit_diffs(model, pairs, fwd_hooks):
    diffs = []
    for _, text, correct, incorrect in pairs:
        logits, _ = run(model, fwd_hooks, text=text)
        good = model.tokenize(correct, prepend_bos=False)[0]
        bad = model.tokenize(incorrect, prepend_bos=False)[0]
        diffs.append(float(logits[0, -1, good] - logits[0, -1, bad]))
    return torch.tensor(diffs)


@pytest.fixture(scope="module")
def copy_task():
    return planting.copy_task_model(task_head=(0, 1))


@pytest.mark.parametrize("mode", ["zero", "mean", "uniform"])
def test_ablating_the_task_head_breaks_the_task_and_others_do_not(copy_task, mode):
    model, pairs = copy_task
    info = model.info
    prompts = [TokenizedPrompt(pid, tuple(model.tokenize(text))) for pid, text, _, _ in pairs]
    means = head_means(model, batches(prompts, 8, model.tokenizer.pad_token_id, model.device))
    clean = logit_diffs(model, pairs, [])
    assert (clean > 0).all()
    for layer in range(info.n_layers):
        for head in range(info.n_heads):
            ablation = HeadAblation(((layer, head),), mode, means=means)
            got = logit_diffs(model, pairs, hooks([ablation], info))
            if (layer, head) == (0, 1):
                assert got.mean() < clean.mean() / 3, f"{ablation.label} left the task intact"
            else:
                assert (got - clean).abs().max() < 0.1 * clean.mean(), ablation.label


def test_head_means_average_real_tokens_only(tiny_model):
    texts = [TEXT, "the cat"]
    prompts = [TokenizedPrompt(f"p{i}", tuple(tiny_model.tokenize(t))) for i, t in enumerate(texts)]
    padded = head_means(tiny_model, batches(prompts, 2, tiny_model.tokenizer.pad_token_id, "cpu"))
    name = hook_names.attn(1, "z")
    zs = [run(tiny_model, [], text=t, capture=[name])[1][name][0] for t in texts]
    expected = torch.cat(zs).mean(0)  # [head, d_head] over every real token
    torch.testing.assert_close(padded[1], expected)


def test_heads_are_given_as_pairs_or_names_and_bad_ones_are_config_errors():
    from analyses.interventions.kinds import HeadAblation
    from probes.core.errors import ConfigError

    assert HeadAblation([18, 8]).heads == ((18, 8),)  # one head, not two
    assert HeadAblation(["L18H8", (3, 1)]).heads == ((18, 8), (3, 1))
    assert HeadAblation("L2H0").heads == ((2, 0),)
    with pytest.raises(ConfigError, match="like 'L18H8'"):
        HeadAblation(["L18"])
    with pytest.raises(ConfigError, match="appears more than once"):
        HeadAblation([(1, 2), "L1H2"])
    with pytest.raises(ConfigError, match=r"HeadAblation\.heads: give one head or a list.*got 18"):
        HeadAblation(18)  # type: ignore[arg-type]  # was "'int' object is not iterable"
    with pytest.raises(ConfigError, match="mode must be one of"):
        HeadAblation([(1, 2)], "nope")  # type: ignore[arg-type]
