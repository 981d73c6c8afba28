import pandas as pd
import pytest
import torch

from probes import engine
from probes.core import hook_names as hooks
from probes.families.future_attention import (
    FutureAttentionParams,
    FutureAttentionProbe,
    split_heads,
    windowed_distance,
)
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting

TEXTS = [
    "the cat went to the park and the dog went to the store with the man and the old book "
    "of the city was on the river in the house that they made before the great day came",
    "mary gave the ball to john and the dog went to the store",
    "the capital of france is paris and the river is long and green and the city is old and "
    "the people there work in the house by the river",
]
SUITE = PromptSuite("t", tuple(Prompt(f"p{i}", t) for i, t in enumerate(TEXTS)), "test")


def run(model, plants=(), params=None) -> pd.DataFrame:
    probe = FutureAttentionProbe(model.info, params)
    with planting.planted(model, plants):
        return engine.run(model, [probe], SUITE, batch_size=2, max_tokens=None, progress=False)


def series(rows: pd.DataFrame, metric: str, prompt: str) -> dict[int, float]:
    picked = rows[rows.metric == metric]
    picked = picked[picked["prompt"] == prompt]
    return dict(zip(picked.position.astype(int), picked.value, strict=True))


def locality(rows: pd.DataFrame) -> dict[tuple[int, int], str]:
    picked = rows[rows.metric == "locality"]
    return {(int(r.layer), int(r["head"])): r.condition for _, r in picked.iterrows()}


# --- a transcription of the paper's equations, on full attention maps ---------------------------


def reference(model, params: FutureAttentionParams):
    """Eqs. 7–10 of arXiv 2510.13554 with explicit loops over one prompt's full maps at a time."""
    maps = {}
    for prompt in SUITE.prompts:
        tokens = torch.tensor([model.tokenize(prompt.text)])
        _, cache = model.bridge.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("hook_pattern")
        )
        maps[prompt.id] = torch.stack(
            [cache[hooks.attn(layer, "pattern")][0] for layer in range(model.info.n_layers)]
        ).double()  # [layer, head, T, T]
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    total, count = torch.zeros(n_layers, n_heads, dtype=torch.float64), 0
    for attention in maps.values():
        n = attention.shape[-1]
        for t in range(params.first_position, n):
            total += sum(attention[..., t, s] * (t - s) for s in range(t + 1))
            count += 1
    d = total / count
    order = sorted(range(n_layers * n_heads), key=lambda i: (d.flatten()[i].item(), i))
    n_local = round(params.local_fraction * n_layers * n_heads)
    n_global = round(params.global_fraction * n_layers * n_heads)
    local = [divmod(i, n_heads) for i in order[:n_local]]
    global_ = [divmod(i, n_heads) for i in order[-n_global:]]
    waad, fai = {}, {}
    for prompt_id, attention in maps.items():
        n = attention.shape[-1]
        a_loc = sum(attention[layer, head] for layer, head in local) / len(local)
        a_glob = sum(attention[layer, head] for layer, head in global_) / len(global_)
        waad[prompt_id] = {
            t: sum(a_loc[t, s].item() * min(t - s, params.window) for s in range(t + 1))
            for t in range(params.first_position, n)
        }
        fai[prompt_id] = {}
        for s in range(n):
            window = [
                t
                for t in range(params.first_position, n)
                if s + params.horizon_low <= t <= min(n - 1, s + params.horizon_high)
            ]
            if window:
                fai[prompt_id][s] = sum(a_glob[t, s].item() for t in window) / len(window)
    return d, set(local), set(global_), waad, fai


@pytest.mark.parametrize(
    "params",
    [
        FutureAttentionParams(),
        FutureAttentionParams(
            local_fraction=0.25,
            global_fraction=0.5,
            window=3,
            horizon_low=2,
            horizon_high=7,
            first_position=3,
        ),
    ],
)
def test_streaming_equals_the_papers_equations_on_full_maps(tiny_model, params):
    rows = run(tiny_model, params=params)
    d, local, global_, waad, fai = reference(tiny_model, params)
    distance = rows[rows.metric == "mean_attention_distance"]
    for _, row in distance.iterrows():
        assert row.value == pytest.approx(d[int(row.layer), int(row["head"])].item(), rel=1e-5)
    classes = locality(rows)
    assert {head for head, name in classes.items() if name == "local"} == local
    assert {head for head, name in classes.items() if name == "global"} == global_
    for prompt in SUITE.prompts:
        ours_waad, ours_fai = series(rows, "waad", prompt.id), series(rows, "fai", prompt.id)
        assert ours_waad.keys() == waad[prompt.id].keys()
        assert ours_fai.keys() == fai[prompt.id].keys()
        for t, expected in waad[prompt.id].items():
            assert ours_waad[t] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        for s, expected in fai[prompt.id].items():
            assert ours_fai[s] == pytest.approx(expected, rel=1e-4, abs=1e-6)


# --- planted heads ------------------------------------------------------------------------------


def test_planted_local_heads_are_local_with_waad_one_and_bos_heads_anchor_fai(tiny_model):
    plants = [
        planting.previous_token_head(0, 0),
        planting.previous_token_head(1, 1),
        planting.bos_head(0, 2),
        planting.bos_head(1, 3),
    ]
    rows = run(tiny_model, plants)  # 8 heads: 30 % → 2 local, 2 global
    classes = locality(rows)
    assert {h for h, c in classes.items() if c == "local"} == {(0, 0), (1, 1)}
    assert {h for h, c in classes.items() if c == "global"} == {(0, 2), (1, 3)}
    strength = rows[rows.metric == "locality"].groupby("condition").value.agg(["min", "max"])
    assert strength.loc["local", "max"] == strength.loc["global", "max"] == 1.0  # the extremes
    assert strength.loc["local", "min"] == pytest.approx(6 / 7)  # 8 heads: ranks step by 1/7
    for prompt in SUITE.prompts:
        waad = series(rows, "waad", prompt.id)
        assert len(waad) == len(tiny_model.tokenize(prompt.text)) - 1
        assert list(waad.values()) == pytest.approx([1.0] * len(waad), abs=1e-6)  # looks back 1
        fai = series(rows, "fai", prompt.id)
        assert fai[0] == pytest.approx(1.0, abs=1e-6)  # BOS is the only anchor
        assert max(v for s, v in fai.items() if s > 0) == pytest.approx(0.0, abs=1e-6)


def test_waad_grows_with_the_look_back_and_is_clipped_at_the_window(tiny_model):
    def three_back(layer, head):
        return planting.attend_to(layer, head, lambda q: max(q - 3, 0))

    plants = [three_back(0, 0), three_back(1, 1), planting.bos_head(0, 2), planting.bos_head(1, 3)]
    wide = run(tiny_model, plants)
    narrow = run(tiny_model, plants, FutureAttentionParams(window=2))
    for prompt in SUITE.prompts:
        for t, value in series(wide, "waad", prompt.id).items():
            assert value == pytest.approx(min(t, 3), abs=1e-6)
        for t, value in series(narrow, "waad", prompt.id).items():
            assert value == pytest.approx(min(t, 2), abs=1e-6)


def test_token_rows_name_their_prompt_and_token(tiny_model):
    rows = run(tiny_model)
    waad = rows[rows.metric == "waad"]
    first = list(waad.loc[waad["prompt"] == "p1", "token"])
    assert waad["condition"].isna().all() and waad["layer"].isna().all()
    assert first == TEXTS[1].split()  # position 0 (BOS) is not scored
    assert waad.layer.isna().all() and waad["head"].isna().all()


# --- pure pieces ----------------------------------------------------------------------------------


def test_windowed_distance_of_a_uniform_head_has_closed_form():
    n, window = 7, 3
    causal = torch.ones(n, n).tril()
    pattern = (causal / causal.sum(-1, keepdim=True))[None, None]
    expected = [sum(min(t - s, window) for s in range(t + 1)) / (t + 1) for t in range(n)]
    torch.testing.assert_close(windowed_distance(pattern, window)[0, 0], torch.tensor(expected))


def clipped_distance(rows, window, q_start, k_start):
    """WAAD as the definition reads, Σ_s A(t,s)·clamp(t − s, 0, W) over every key: the form
    `windowed_distance` avoids (it reads only a band of W keys beyond one sum)."""
    n_rows, n = rows.shape[-2:]
    query = torch.arange(q_start, q_start + n_rows)[:, None]
    lag = query - torch.arange(k_start, k_start + n)[None, :]
    return torch.einsum("bhqk,qk->bhq", rows, lag.clamp(min=0, max=window).to(rows.dtype))


@pytest.mark.parametrize("window", [1, 3, 10])
@pytest.mark.parametrize(("q_start", "k_start", "n_rows", "n_keys"), [
    (0, 0, 9, 9), (5, 0, 4, 9), (20, 12, 6, 14), (20, 22, 6, 4), (3, 0, 2, 30),
])  # fmt: skip
def test_windowed_distance_equals_the_clipped_sum_over_every_key(
    window, q_start, k_start, n_rows, n_keys
):
    """Random rows with weight on future keys too (counted 0), chunks and bands."""
    rows = torch.rand(2, 3, n_rows, n_keys, generator=torch.Generator().manual_seed(window))
    rows /= rows.sum(-1, keepdim=True)  # rows of weights, as attention's are
    expected = clipped_distance(rows, window, q_start, k_start)
    actual = windowed_distance(rows, window, q_start, k_start)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-5)
    misplaced = windowed_distance(rows, window, q_start, k_start + 1)
    assert not torch.allclose(misplaced, expected)  # the keys' positions matter


def test_split_heads_takes_the_extremes_and_refuses_overlapping_fractions():
    distance = torch.tensor([[5.0, 1.0, 3.0], [2.0, 9.0, 4.0]])
    local, global_ = split_heads(distance, 1 / 3, 1 / 3)
    assert local.nonzero().tolist() == [[0, 1], [1, 0]]
    assert global_.nonzero().tolist() == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match="more than the 6 heads"):
        split_heads(distance, 0.6, 0.5)


def test_params_are_checked():
    with pytest.raises(ValueError, match="horizon"):
        FutureAttentionParams(horizon_low=20, horizon_high=10)


@pytest.mark.slow
def test_smollm2_global_heads_make_the_first_token_the_strongest_anchor(smollm2):
    """Sink heads look far back, so they land in the global set, and BOS tops FAI (Gu et al.'s
    first-token sink seen through the paper's lens)."""
    from probes.inputs.prompts import stdlib_docs_suite

    probe = FutureAttentionProbe(smollm2.info)
    rows = engine.run(smollm2, [probe], stdlib_docs_suite(2, 120), max_tokens=128, progress=False)
    counts = rows[rows.metric == "locality"].condition.value_counts().to_dict()
    assert counts == {"local": 81, "global": 81, "middle": 108}
    fai = rows[rows.metric == "fai"]
    for _, group in fai.groupby("prompt"):
        assert int(group.loc[group.value.idxmax(), "position"]) == 0
