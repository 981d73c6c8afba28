import pytest
import torch

from analyses.jobs import induction_check
from analyses.jobs.induction_check import InductionCheckConfig
from probes.core.errors import ConfigError
from probes.inputs.synthetic import repeated_random_prompts
from tests import planting

HALF = 16
CONFIG = InductionCheckConfig(
    model="tiny-random", top_k=2, n_sequences=3, half_len=HALF, seeds=(1, 2), batch_size=2
)


def induction_key(query: int) -> int:
    return query - HALF + 1 if query > HALF else 0


def test_planted_induction_head_ranks_first_and_random_heads_avoid_the_top(tiny_model):
    plants = [planting.attend_to(1, 3, induction_key)]
    with planting.planted(tiny_model, plants):
        table = induction_check.run(CONFIG, tiny_model)
    top = table[table.condition == "top"].heads.unique()
    assert len(top) == 1 and top[0].startswith("L1H3,")  # the planted head leads the ranking
    randoms = table[table.condition == "random"].set_index("seed").heads
    top_heads = set(top[0].split(","))
    top_layers = sorted(name.split("H")[0] for name in top_heads)
    for heads in randoms:  # layer-matched controls (analyses/interventions/controls.py)
        names = heads.split(",")
        assert not top_heads & set(names) and len(names) == 2
        assert sorted(name.split("H")[0] for name in names) == top_layers
    with planting.planted(tiny_model, plants):
        again = induction_check.run(CONFIG, tiny_model)
    assert list(again[again.condition == "random"].heads) == list(randoms)


def test_clean_losses_equal_a_plain_forward_and_ablation_changes_them(tiny_model):
    table = induction_check.run(CONFIG, tiny_model).set_index(["seed", "condition"])
    for seed in CONFIG.seeds:
        tokens = torch.tensor(
            [
                p.tokens
                for p in repeated_random_prompts(tiny_model, CONFIG.n_sequences, HALF, seed, "test")
            ]
        )
        with torch.inference_mode():
            logits = tiny_model.bridge(tokens, return_type="logits")
        losses = induction_check.next_token_losses(logits, tokens)
        clean = table.loc[(seed, "clean")]
        assert clean.loss_first_half == pytest.approx(losses[:, 1:HALF].mean().item(), rel=1e-5)
        assert clean.loss_repeated == pytest.approx(
            losses[:, HALF : 2 * HALF].mean().item(), rel=1e-5
        )
        assert clean.delta_repeated == 0.0
        assert table.loc[(seed, "top")].loss_repeated != pytest.approx(clean.loss_repeated)


def test_summary_counts_the_seeds_where_top_beats_random(tiny_model):
    table = induction_check.run(CONFIG, tiny_model)
    summary = induction_check.summarize(table)
    deltas = table.pivot(index="seed", columns="condition", values="delta_repeated")
    wins = int((deltas["top"] > deltas["random"]).sum())
    assert set(summary["top_beats_random"]) == {f"{wins}/2"}


def test_config_refuses_evaluating_on_the_ranking_sequences():
    with pytest.raises(ConfigError, match="detect_seed=1"):
        InductionCheckConfig(detect_seed=1, seeds=(1, 2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_k": 0}, "top_k must be a whole number ≥ 1"),
        ({"n_sequences": 0}, "n_sequences must be a whole number ≥ 1"),
        ({"batch_size": 0}, "batch_size must be a whole number ≥ 1"),
        ({"half_len": 1}, "half_len must be a whole number ≥ 2"),
        ({"seeds": ()}, "seeds: give at least one"),
        ({"device": "gpu"}, "device must be cpu, cuda"),
    ],
)
def test_config_checks_its_ranges(changes, message):
    with pytest.raises(ConfigError, match=message):
        InductionCheckConfig(**changes)


def test_induction_check_verb_runs_on_the_tiny_model(capsys):
    from analyses.cli.main import main

    argv = ["induction-check", "--model", "tiny-random", "--top-k", "2", "--n-sequences", "3",
            "--half-len", str(HALF), "--seeds", "1,2", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "top_beats_random" in out and out.count("random") >= 3
    assert main(["induction-check", "--seeds", "0,1"]) == 2  # detect_seed 0 is refused first
    assert "--detect-seed=0 ranks the heads" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_induction_heads_are_causal(smollm2):
    config = InductionCheckConfig(n_sequences=4, half_len=32, seeds=(1, 2))
    table = induction_check.run(config, smollm2).set_index(["seed", "condition"])
    for seed in config.seeds:
        top, rand = table.loc[(seed, "top")], table.loc[(seed, "random")]
        assert top.delta_repeated > 2 * max(rand.delta_repeated, 0.05)
        # the first half cannot be predicted by induction; ablation barely moves it
        assert abs(top.loss_first_half - table.loc[(seed, "clean")].loss_first_half) < (
            top.delta_repeated
        )
