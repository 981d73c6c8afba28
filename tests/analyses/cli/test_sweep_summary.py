"""What `headlab sweep` (and `show` of a sweep run) prints: clean measures, the sign of harm,
top-k against the layer-matched random controls per k, the most harmful single heads."""

from __future__ import annotations

import pandas as pd

from analyses.cli.sweep import format_sweep
from analyses.results import store


def sweep_table(*records: dict) -> pd.DataFrame:
    base = {"run_id": "r", "model": "m", "probe": "sweep"}
    return store.conform(pd.DataFrame([{**base, **record} for record in records]))


def harm(condition: str, value: float, **where) -> dict:
    return {"metric": "lm.loss.harm", "condition": condition, "value": value, **where}


def test_top_k_is_set_against_the_random_controls_per_k():
    table = sweep_table(
        {"metric": "lm.loss", "condition": "clean", "value": 3.25},
        harm("zero|top1:sink/alpha@0", 0.5),
        harm("zero|random1:sink/alpha@0:seed0", 0.1),
        harm("zero|random1:sink/alpha@0:seed1", 0.3),
        harm("zero|top2:sink/alpha@0", 0.8),
        harm("zero|random2:sink/alpha@0:seed0", 0.2),
        harm("zero|random2:sink/alpha@0:seed1", 0.2),
        harm("scale=2|heads:L0H1", -0.05),
    )
    assert format_sweep(table).splitlines() == [
        "  clean lm.loss = 3.25",
        "  (harm: how much worse than clean; > 0 is worse)",
        "  lm.loss.harm [zero], top-k heads by sink/alpha@0 vs k layer-matched random heads "
        "(mean and range over 2 seeds):",
        "    k=1   top 0.5        random 0.2 (0.1..0.3)",
        "    k=2   top 0.8        random 0.2 (0.2..0.2)",
        "  lm.loss.harm [scale=2|heads:L0H1] = -0.05",
    ]


def test_single_head_maps_list_the_most_harmful_heads_first():
    heads = [harm("zero", value, layer=0, head=h) for h, value in enumerate([0.1, 0.7, 0.0, 0.4])]
    table = sweep_table({"metric": "lm.loss", "condition": "clean", "value": 3.0}, *heads)
    assert format_sweep(table, k=2).splitlines() == [
        "  clean lm.loss = 3",
        "  (harm: how much worse than clean; > 0 is worse)",
        "  sweep/lm.loss.harm [zero]: L0H1=0.7, L0H3=0.4",
    ]


def test_show_of_a_sweep_run_prints_the_sweep_summary(tmp_path, capsys):
    from analyses.cli.main import main

    table = sweep_table(
        {"metric": "lm.loss", "condition": "clean", "value": 3.0},
        harm("zero|top1:score", 0.9),
        harm("zero|random1:score:seed0", 0.1),
    )
    store.write_run(tmp_path, "m-sweep-0123abcd", table, {"kind": "sweep", "model": {"model": "m"}})
    assert main(["show", "latest", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "Sweeps:",
        "  clean lm.loss = 3",
        "  (harm: how much worse than clean; > 0 is worse)",
        "  lm.loss.harm [zero], top-k heads by score vs k layer-matched random heads "
        "(mean and range over 1 seed):",
        "    k=1   top 0.9        random 0.1 (0.1..0.1)",
    ]
