"""Every path on CUDA equals the same work on the CPU (tiny random models, within tolerance)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analyses.interventions.kinds import HeadAblation
from analyses.jobs.scan import DEFAULT_PROBES
from probes import bridge, engine
from probes import decoding as decode
from probes.families import get_probe
from probes.families.retrieval import run_sample
from probes.inputs import niah
from probes.inputs.prompts import stdlib_docs_suite
from probes.models import LoadedModel, load
from tests.gpu.conftest import GPU_DEVICE
from tests.probes.families.test_retrieval import HAYSTACK, NEEDLE, TEMPLATE

pytestmark = pytest.mark.gpu
CUDA = GPU_DEVICE
SUITE = stdlib_docs_suite(3, 60)


@pytest.fixture(scope="module")
def pair() -> tuple[LoadedModel, LoadedModel]:
    return load("tiny-random"), load("tiny-random", device=CUDA)


def scan(model: LoadedModel, path: str, suite=SUITE) -> pd.DataFrame:
    probes = [get_probe(name)(model.info) for name in DEFAULT_PROBES]
    return engine.run(model, probes, suite, progress=False, path=path)


def assert_tables_close(left: pd.DataFrame, right: pd.DataFrame, atol: float) -> None:
    pd.testing.assert_frame_equal(left, right, rtol=0, atol=atol)
    assert left["value"].abs().sum() > 0  # not two empty tables


def test_weights_are_on_the_gpu(pair):
    _, on_gpu = pair
    assert on_gpu.device.type == torch.device(CUDA).type
    assert on_gpu.provenance["device"] == CUDA


@pytest.mark.parametrize("path", ["fast", "bridge"])
def test_the_default_scan_on_cuda_equals_the_cpu(pair, path):
    on_cpu, on_gpu = pair
    assert_tables_close(scan(on_gpu, path), scan(on_cpu, path), atol=1e-4)


def test_fast_and_bridge_paths_agree_on_cuda(pair):
    _, on_gpu = pair
    assert_tables_close(scan(on_gpu, "fast"), scan(on_gpu, "bridge"), atol=1e-5)


def test_the_fused_retrieval_decode_on_cuda_equals_the_cpu_and_the_bridge(pair):
    outcomes = {}
    for model in pair:
        sample = niah.NiahBuilder(model, HAYSTACK, TEMPLATE).sample(NEEDLE, 80, 50)
        stop = decode.StopRule(model.tokenizer)
        for path in ("fused", "bridge"):
            outcomes[str(model.device), path] = run_sample(
                model, sample, max_new_tokens=16, stop=stop, path=path
            )
    reference = outcomes["cpu", "bridge"]
    assert len(outcomes) == (2 if CUDA == "cpu" else 4)
    for outcome in outcomes.values():
        assert outcome.generated == reference.generated
        assert torch.equal(outcome.hits, reference.hits)


def test_an_intervention_on_cuda_equals_the_cpu(pair):
    results = []
    for model in pair:
        ids = model.tokenize("the capital of france is paris")
        tokens = torch.tensor([ids], device=model.device)
        clean = bridge.forward(model, tokens)
        with HeadAblation([(0, 1), (1, 2)]).applied(model) as block:
            ablated = bridge.forward(model, tokens)
        assert block.changed and not torch.allclose(clean, ablated)
        results.append((clean.cpu(), ablated.cpu()))
    (cpu_clean, cpu_ablated), (gpu_clean, gpu_ablated) = results
    torch.testing.assert_close(gpu_clean, cpu_clean, rtol=0, atol=1e-4)
    torch.testing.assert_close(gpu_ablated, cpu_ablated, rtol=0, atol=1e-4)


def test_bfloat16_on_cuda_stays_near_float32():
    """bf16 weights and activations, float32 sums: every metric within 0.05 of float32's."""
    float32 = scan(load("tiny-random", device=CUDA), "fast")
    bfloat16 = scan(load("tiny-random", device=CUDA, dtype="bfloat16"), "fast")
    difference = (bfloat16["value"] - float32["value"]).abs()
    assert difference.max() < 0.05
    assert difference.max() > 0  # bf16 did run in bf16


def test_the_8b_shaped_mini_scans_on_cuda_in_bfloat16():
    model = load("random-llama-3-8b-mini", device=CUDA, dtype="bfloat16")
    assert next(model.bridge.parameters()).dtype == torch.bfloat16
    table = scan(model, "fast", stdlib_docs_suite(1, 400))
    assert table["value"].notna().all()
    assert_tables_close(table, scan(model, "bridge", stdlib_docs_suite(1, 400)), atol=2e-2)
