"""`attention_stats`: entropy, normalised entropy and mean attention distance per head, on planted
patterns with closed-form values."""

import math

import pandas as pd
import pytest

from probes import engine
from probes.families.attention_stats import AttentionStatsProbe
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting


def value(rows: pd.DataFrame, metric: str, layer: int, head: int) -> float:
    (result,) = rows[(rows.metric == metric) & (rows.layer == layer) & (rows["head"] == head)].value
    return result


STATS_TEXTS = ["the cat went to the park and the dog went to the store", "mary gave the ball"]


def run_stats(model, plants) -> pd.DataFrame:
    suite = PromptSuite("t", tuple(Prompt(f"p{i}", t) for i, t in enumerate(STATS_TEXTS)), "test")
    with planting.planted(model, plants):
        return engine.run(
            model,
            [AttentionStatsProbe(model.info)],
            suite,
            batch_size=2,
            max_tokens=None,
            progress=False,
        )


def test_planted_heads_have_closed_form_entropy_and_distance(tiny_model):
    plants = [
        planting.previous_token_head(0, 0),
        planting.uniform_head(0, 1),
        planting.bos_head(1, 0),
    ]
    rows = run_stats(tiny_model, plants)
    queries = [q for text in STATS_TEXTS for q in range(1, len(tiny_model.tokenize(text)))]
    assert value(rows, "mean_attention_distance", 0, 0) == pytest.approx(1.0, abs=1e-5)
    assert value(rows, "entropy", 0, 0) == pytest.approx(0.0, abs=1e-4)
    mean_log = sum(math.log(q + 1) for q in queries) / len(queries)
    assert value(rows, "entropy", 0, 1) == pytest.approx(mean_log, rel=1e-5)
    assert value(rows, "entropy_normalized", 0, 1) == pytest.approx(1.0, rel=1e-5)
    assert value(rows, "mean_attention_distance", 0, 1) == pytest.approx(
        sum(q / 2 for q in queries) / len(queries), rel=1e-5
    )
    assert value(rows, "mean_attention_distance", 1, 0) == pytest.approx(
        sum(queries) / len(queries), rel=1e-5
    )
    assert value(rows, "entropy_normalized", 1, 0) == pytest.approx(0.0, abs=1e-4)


# --- the real model -------------------------------------------------------------------------------
