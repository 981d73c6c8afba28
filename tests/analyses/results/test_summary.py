"""What `scan` and `show` print first (analyses/results/summary.py), on planted tables whose
figures are known: NIAH accuracy overall / by length / by depth, the share of retrieval heads,
Sink_1^ε, the pattern classes; and the top-heads table."""

from __future__ import annotations

import pandas as pd

from analyses.results import store, summary

LENGTHS, DEPTHS = (256, 512), (0, 50, 100)
# accuracy per (length, depth) cell, one sample each: 4 of 6 answered
CELLS = {(256, 0): 1.0, (256, 50): 1.0, (256, 100): 1.0, (512, 0): 1.0, (512, 50): 0.0,
         (512, 100): 0.0}  # fmt: skip
PARAMS = {"lengths": list(LENGTHS), "depths": list(DEPTHS), "needles_per_cell": 1,
          "recall_threshold": 0.5}  # fmt: skip


def rows(*records: dict) -> pd.DataFrame:
    return store.conform(pd.DataFrame([{"run_id": "r", "model": "m", **r} for r in records]))


def retrieval_rows(scores: dict[tuple[int, int], float]) -> list[dict]:
    cells = [{"probe": "retrieval", "metric": "niah_accuracy", "length": length, "depth": depth,
              "value": value} for (length, depth), value in CELLS.items()]  # fmt: skip
    overall = {"probe": "retrieval", "metric": "niah_accuracy", "condition": "all",
               "value": sum(CELLS.values()) / len(CELLS)}  # fmt: skip
    recall = {"probe": "retrieval", "metric": "niah_recall", "condition": "all", "value": 0.9}
    heads = [{"probe": "retrieval", "metric": "retrieval_score", "layer": layer, "head": head,
              "value": value} for (layer, head), value in scores.items()]  # fmt: skip
    return [*cells, overall, recall, *heads]


SCORES = {(layer, head): 0.0 for layer in range(2) for head in range(5)}
SCORES.update({(1, 3): 0.9, (0, 2): 0.35, (1, 0): 0.1})  # 0.1 is not above the threshold


def test_a_retrieval_run_leads_with_its_niah_accuracy_and_retrieval_heads():
    table = rows(*retrieval_rows(SCORES))
    assert summary.format_headlines(table, {"retrieval": PARAMS}).splitlines() == [
        "  m  NIAH accuracy 67% (4 of 6 samples answered; ROUGE-1 recall > 0.5)",
        "  m    by length (tokens): 256: 100%, 512: 33%",
        "  m    by needle depth (% into the haystack): 0: 100%, 50: 50%, 100: 50%",
        "  m  retrieval heads (score > 0.1): 2 of 10 (20.0%); strongest L1H3=0.9, L0H2=0.35, "
        "L1H0=0.1",
    ]
    # without the manifest's parameters the sample count is left out, not guessed
    assert summary.format_headlines(table).splitlines()[0] == "  m  NIAH accuracy 67%"


def test_a_retrieval_run_the_model_never_answered_says_so():
    table = rows(*retrieval_rows({}))  # no head scored: no retrieval_score rows
    lines = summary.format_headlines(table, {"retrieval": PARAMS}).splitlines()
    assert lines[-1] == "  m  retrieval scores: none (the model answered no sample)"


def test_one_cell_grid_prints_no_breakdown():
    table = rows(
        {"probe": "retrieval", "metric": "niah_accuracy", "length": 256, "depth": 50, "value": 0.0},
        {"probe": "retrieval", "metric": "niah_accuracy", "condition": "all", "value": 0.0},
    )
    params = {"lengths": [256], "depths": [50], "needles_per_cell": 3}
    assert summary.format_headlines(table, {"retrieval": params}).splitlines() == [
        "  m  NIAH accuracy 0% (0 of 3 samples answered)",
        "  m  retrieval scores: none (the model answered no sample)",
    ]


def test_sink_share_and_pattern_classes():
    sink = [{"probe": "sink", "metric": "sink_rate", "layer": 0, "head": h, "position": p,
             "value": v} for h, (p, v) in enumerate([(0, 1.0), (0, 0.5), (0, 0.0), (0, 0.5),
                                                      (1, 1.0)])]  # fmt: skip
    names = ["local", "sink", "sink", "diffuse", "sink"]
    classes = [{"probe": "pattern_class", "metric": "pattern_class", "layer": 1, "head": h,
                "condition": c, "value": 0.9} for h, c in enumerate(names)]  # fmt: skip
    table = rows(*sink, *classes)
    assert summary.format_headlines(table, {"sink": {"epsilon": 0.3}}).splitlines() == [
        "  m  Sink_1^ε: 50.0% of heads sink on the first token (α > 0.3, per sequence)",
        "  m  pattern classes: 3 sink, 1 diffuse, 1 local (of 5 heads)",
    ]
    assert summary.sink_percentage(table)["m"] == 50.0  # the same figure the notebooks use


def test_a_run_without_headline_probes_has_no_headlines():
    table = rows({"probe": "detectors", "metric": "induction", "layer": 0, "head": 0, "value": 1})
    assert summary.format_headlines(table) == ""


def test_top_heads_align_every_label_and_rank_highest_first():
    table = rows(
        {"probe": "sink", "metric": "alpha", "layer": 0, "head": 0, "position": 0, "value": 0.2},
        {"probe": "sink", "metric": "alpha", "layer": 0, "head": 1, "position": 0, "value": 0.9},
        {"probe": "attention_stats", "metric": "entropy_normalized", "layer": 2, "head": 1,
         "value": 0.5},
        {"probe": "sink", "metric": "massive_ratio", "layer": 3, "condition": "sink_token",
         "value": 40.0},
    )  # fmt: skip
    assert summary.format_top_heads(table, k=2).splitlines() == [
        "  m  attention_stats/entropy_normalized  L2H1=0.5",
        "  m  sink/alpha                          L0H1=0.9, L0H0=0.2",
        "  m  sink/massive_ratio [sink_token]     max 40 at layer 3 (median over layers 40)",
    ]
