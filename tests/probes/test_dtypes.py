"""Models in bfloat16: every streaming metric of the default scan stays within a stated bound of
float32 on the real default model, the dtype is recorded, and bad dtypes are refused."""

import pytest
import torch

from analyses.jobs.scan import DEFAULT_PROBES
from probes import engine
from probes.core.errors import ConfigError
from probes.families import get_probe
from probes.inputs.prompts import stdlib_docs_suite
from probes.models import load

KEY = ["probe", "metric", "layer", "head", "position", "condition"]
# |bf16 − fp32| bounds, per metric (bf16 keeps 8 bits of mantissa: ~0.4 % per operation, and a
# 30-layer forward compounds it). Shares of attention and scores in [0, 1]:
SHARE_BOUND = 0.05
BOUNDS = {  # the rest, in their own units
    "entropy": 0.1,  # nats
    "mean_attention_distance": 1.5,  # tokens, of distances up to ~100
    "waad": 0.1,  # tokens (a distance capped at W = 10)
}
LABELS = ("pattern_class", "locality")  # a class per head, stored in `condition`
# Metrics that threshold a value flip for heads near the threshold: bound the mean over heads.
THRESHOLDED = {"sink_rate": 0.01, "hidden_sink_rate": 0.02, "hidden_sink_count": 0.1}
RELATIVE = {"massive_ratio": 0.05}  # a ratio of activation norms in the thousands


def scan(model, suite):
    probes = [get_probe(name)(model.info) for name in DEFAULT_PROBES]
    table = engine.run(model, probes, suite, batch_size=4, max_tokens=128, progress=False)
    return table.set_index(KEY)["value"].sort_index()


@pytest.fixture(scope="module")
def both(smollm2):
    suite = stdlib_docs_suite(8, 160)
    bf16 = load("smollm2-135m", dtype="bfloat16")
    assert bf16.provenance["dtype"] == "bfloat16"
    assert next(bf16.bridge.parameters()).dtype == torch.bfloat16
    return scan(smollm2, suite), scan(bf16, suite)


@pytest.mark.slow
def test_every_streaming_metric_in_bfloat16_stays_within_its_bound(both):
    fp32, bf16 = (table.drop(list(LABELS), level="metric") for table in both)
    only = fp32.index.symmetric_difference(bf16.index)
    assert len(only) == 0, list(only[:6])  # the same rows
    difference = (fp32 - bf16).abs().groupby(level="metric")
    worst, mean = difference.max(), difference.mean()
    scale = fp32.abs().groupby(level="metric").max()
    for metric in worst.index:
        if metric in THRESHOLDED:
            assert mean[metric] <= THRESHOLDED[metric], (metric, mean[metric])
        elif metric in RELATIVE:
            assert worst[metric] <= RELATIVE[metric] * scale[metric], (metric, worst[metric])
        else:
            assert worst[metric] <= BOUNDS.get(metric, SHARE_BOUND), (metric, worst[metric])
    assert {"alpha", "entropy", "induction", "fai", "recall_sink", "waad"} <= set(worst.index)


@pytest.mark.slow
@pytest.mark.parametrize("metric", LABELS)
def test_most_heads_keep_their_class_in_bfloat16(both, metric):
    fp32, bf16 = (
        table.xs(metric, level="metric").reset_index("condition")["condition"] for table in both
    )
    assert len(fp32) == len(bf16) > 0
    assert (fp32 == bf16.loc[fp32.index]).mean() >= 0.95


@pytest.mark.slow
def test_the_bound_is_not_met_by_chance(both):
    """Negative case: the comparison can fail — a planted error of one bound is caught."""
    fp32, bf16 = both
    alpha = fp32.xs("alpha", level="metric", drop_level=False)
    shifted = bf16.copy()
    shifted.loc[alpha.index] = alpha + 2 * SHARE_BOUND
    assert (fp32 - shifted).abs().xs("alpha", level="metric").max() > SHARE_BOUND


@pytest.mark.parametrize("dtype", ["float64", "bf16", ""])
def test_an_unknown_dtype_is_refused_by_name(dtype):
    with pytest.raises(ConfigError, match="dtype must be one of float32, bfloat16, float16"):
        load("tiny-random", dtype=dtype)


def test_a_tiny_model_in_float16_records_its_dtype():
    model = load("tiny-random", dtype="float16")
    assert model.provenance["dtype"] == "float16"
    assert next(model.bridge.parameters()).dtype == torch.float16


def test_the_cli_records_the_dtype_and_a_sweep_resumes_only_in_its_own(tmp_path, capsys):
    from analyses.cli.main import main
    from analyses.results import store

    data = str(tmp_path)
    scan = ["scan", "--model", "tiny-random", "--probes", "sink", "--quiet", "--data", data]
    assert main([*scan, "--run-id", "b", "--dtype", "bfloat16"]) == 0
    manifest = store.read_manifest(tmp_path, "b")
    assert manifest["model"]["dtype"] == "bfloat16" and manifest["config"]["dtype"] == "bfloat16"
    sweep = ["sweep", "--model", "tiny-random", "--tasks", "lm", "--single-head", "zero",
             "--quiet", "--data", data, "--run", "s"]  # fmt: skip
    assert main(sweep) == 0
    capsys.readouterr()
    assert main([*sweep, "--dtype", "bfloat16"]) == 2
    assert "ran in float32; finish it with --dtype float32" in capsys.readouterr().err
