import pandas as pd
import pytest

from analyses.jobs import bench
from probes.core.errors import ConfigError


def test_naive_memory_estimate_matches_the_patterns_run_with_cache_keeps():
    # SmolLM2 at 4,096 tokens: 30 layers × 9 heads × 4096² fp32 = 18 GiB, as measured in issue 7.
    assert bench.naive_pattern_bytes(30, 9, 4096) == 30 * 9 * 4096 * 4096 * 4
    assert bench.naive_pattern_bytes(30, 9, 4096) / 2**30 == pytest.approx(16.9, abs=0.1)


def test_summary_takes_medians_and_ratios_and_keeps_skips():
    measurements = pd.DataFrame(
        [
            {
                "method": "plain",
                "tokens": 8,
                "repeat": r,
                "wall_s": w,
                "peak_rss_mb": 100.0,
                "skipped": None,
            }
            for r, w in enumerate([1.0, 3.0, 2.0])
        ]
        + [
            {
                "method": "headlab",
                "tokens": 8,
                "repeat": r,
                "wall_s": w,
                "peak_rss_mb": 150.0,
                "skipped": None,
            }
            for r, w in enumerate([3.0, 9.0, 6.0])
        ]
        + [
            {
                "method": "naive",
                "tokens": 8,
                "repeat": None,
                "wall_s": None,
                "peak_rss_mb": None,
                "skipped": "too big",
            }
        ]
    )
    table = bench.summarise(measurements)
    assert table.loc[8, "plain_s"] == 2.0 and table.loc[8, "headlab_s"] == 6.0
    assert table.loc[8, "time_vs_plain"] == 3.0
    # Side by side, repeat by repeat: 3/1, 9/3, 6/2, so every paired ratio is 3.
    assert table.loc[8, "plain_lo"] == table.loc[8, "plain_hi"] == 3.0
    assert table.loc[8, "rss_vs_plain"] == 1.5
    assert "naive_s" not in table


def test_bench_runs_each_method_in_its_own_process_on_a_tiny_model(tmp_path):
    methods = ("plain", "body", "naive", "headlab")
    config = bench.BenchConfig(
        model="tiny-random", tokens=(16,), methods=methods, repeats=1, data_dir=tmp_path
    )
    measurements = bench.run(config)
    assert list(measurements.method) == list(methods)
    assert (measurements.wall_s > 0).all() and (measurements.peak_rss_mb > 50).all()
    assert (measurements.cpu_s > 0).all()
    path = bench.save(measurements, config)
    assert path.parent == tmp_path / "bench" and path.suffix == ".parquet"
    summary = bench.format_summary(bench.summarise(measurements))
    assert "time_vs_plain" in summary and "time_vs_body" in summary


def test_lengths_beyond_the_context_are_refused(tmp_path):
    config = bench.BenchConfig(model="tiny-random", tokens=(100_000,), repeats=1)
    with pytest.raises(ValueError, match="T=100000 exceeds the 256-token context"):
        bench.run(config)


def test_unknown_methods_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown bench methods \['fast'\]"):
        bench.BenchConfig(model="tiny-random", tokens=(16,), methods=("plain", "fast"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tokens": ()}, "tokens: give at least one"),
        ({"tokens": (16, 0)}, "tokens must be a whole number ≥ 1, got 0"),
        ({"methods": ()}, "methods: give at least one"),
        ({"repeats": 0}, "repeats must be a whole number ≥ 1"),
        ({"path": "slow"}, "path must be one of"),
        ({"timeout_s": 0.0}, "timeout_s must be more than 0"),
    ],
)
def test_config_checks_its_ranges(changes, message):
    with pytest.raises(ConfigError, match=message):
        bench.BenchConfig(**changes)


def test_cli_bench_builds_the_config_from_its_flags(monkeypatch, tmp_path, capsys):
    from analyses.cli.main import main

    seen = []

    def fake_run(config, progress=True):
        seen.append(config)
        raise ConfigError("stop here")

    monkeypatch.setattr(bench, "run", fake_run)
    argv = ["bench", "--model", "tiny-random", "--tokens", "16,24", "--methods", "plain,body",
            "--repeats", "2", "--path", "fast", "--data", str(tmp_path),
            "--timeout-s", "60", "--probes", "sink,detectors", "--dtype", "bfloat16",
            "--quiet"]  # fmt: skip
    assert main(argv) == 2 and "headlab: error: stop here" in capsys.readouterr().err
    assert seen == [
        bench.BenchConfig(
            model="tiny-random", tokens=(16, 24), methods=("plain", "body"),
            probes=("sink", "detectors"), repeats=2, path="fast", data_dir=tmp_path,
            dtype="bfloat16", timeout_s=60.0, progress=False,
        )
    ]  # fmt: skip


def test_each_repeat_measures_every_length_and_method_before_the_next(monkeypatch):
    """Drift on a shared machine then hits every method alike."""
    calls = []

    def fake_measure(config, method, n_tokens):
        calls.append((method, n_tokens))
        return {"wall_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 1.0}

    monkeypatch.setattr(bench, "measure_in_subprocess", fake_measure)
    config = bench.BenchConfig(model="tiny-random", tokens=(16, 24), methods=("plain", "headlab"))
    measurements = bench.run(config)
    one_round = [("plain", 16), ("headlab", 16), ("plain", 24), ("headlab", 24)]
    assert calls == one_round * 3
    assert list(measurements.repeat) == [r for r in range(3) for _ in one_round]


def test_a_decoding_probe_is_refused_before_anything_runs(tmp_path):
    config = bench.BenchConfig(model="tiny-random", tokens=(16,), probes=("retrieval",))
    with pytest.raises(ConfigError, match="'retrieval' is not a streaming probe"):
        bench.run(config)


def test_a_failed_or_slow_measurement_is_recorded_and_the_others_go_on(monkeypatch, tmp_path):
    import subprocess

    def fake_subprocess_run(command, **kwargs):
        method = command[4]
        if method == "body":
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        if method == "headlab":
            return subprocess.CompletedProcess(command, 1, "", "torch.OutOfMemoryError: CUDA")
        return subprocess.CompletedProcess(command, 0, '{"wall_s": 1.0, "peak_rss_mb": 9.0}', "")

    monkeypatch.setattr(bench.subprocess, "run", fake_subprocess_run)
    config = bench.BenchConfig(
        model="tiny-random", tokens=(16,), methods=("plain", "body", "headlab"), repeats=1,
        data_dir=tmp_path, timeout_s=5.0,
    )  # fmt: skip
    measurements = bench.run(config).set_index("method")
    assert measurements.loc["plain", "wall_s"] == 1.0
    assert pd.isna(measurements.loc["plain", "skipped"])
    assert measurements.loc["body", "skipped"] == "took over --timeout-s 5 s"
    assert "OutOfMemoryError" in measurements.loc["headlab", "skipped"]
    assert "plain_s" in bench.summarise(measurements.reset_index())


def test_the_8b_shape_is_benched_without_building_it_to_read_its_shape(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(bench, "measure_in_subprocess", lambda c, m, t: calls.append((m, t)) or {})
    monkeypatch.setattr(bench, "physical_memory_bytes", lambda: 2**40)  # its logits fit
    config = bench.BenchConfig(
        model="random-llama-3-8b", tokens=(131072,), methods=("plain", "headlab"), repeats=1,
        data_dir=tmp_path,
    )  # fmt: skip
    bench.run(config)  # fast: the 8B weights are never drawn here
    assert calls == [("plain", 131072), ("headlab", 131072)]
    with pytest.raises(ConfigError, match="T=131073 exceeds the 131072-token context"):
        bench.run(bench.BenchConfig(model="random-llama-3-8b", tokens=(131073,)))


def test_a_plain_forward_whose_logits_cannot_fit_is_skipped_with_the_reason(monkeypatch, tmp_path):
    """The 8B shape's 128,256 logits a token: 31 GiB at 128k tokens in bfloat16, 62 in float32."""
    calls = []
    monkeypatch.setattr(bench, "measure_in_subprocess", lambda c, m, t: calls.append((m, t)) or {})
    monkeypatch.setattr(bench, "physical_memory_bytes", lambda: 32 * 2**30)
    assert bench.logits_bytes(128256, 131072, "bfloat16") / 2**30 == pytest.approx(31.3, abs=0.1)

    def bench_run(dtype):
        calls.clear()
        config = bench.BenchConfig(
            model="random-llama-3-8b", tokens=(65536, 131072), methods=("plain", "body"),
            repeats=1, data_dir=tmp_path, dtype=dtype,
        )  # fmt: skip
        return bench.run(config)

    measurements = bench_run("bfloat16")
    assert calls == [("plain", 65536), ("body", 65536), ("body", 131072)]
    skipped = measurements.dropna(subset=["skipped"])
    assert list(zip(skipped.method, skipped.tokens, skipped.skipped, strict=True)) == [
        ("plain", 131072, "logits alone need 31 GiB of 32 GiB")
    ]
    bench_run("float32")  # twice the bytes: 63 GiB at 128k, 31 at 64k
    assert calls == [("body", 65536), ("body", 131072)]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_named_before_a_random_shape_is_measured(monkeypatch, tmp_path):
    from probes.models import ModelUnavailableError

    monkeypatch.setattr(bench, "measure_in_subprocess", lambda *a: pytest.fail("measured"))
    config = bench.BenchConfig(model="random-llama-3-8b", tokens=(512,), device="cuda",
                               data_dir=tmp_path)  # fmt: skip
    with pytest.raises(ModelUnavailableError, match="no CUDA GPU is visible"):
        bench.run(config)


def test_bench_tokens_are_exactly_as_many_as_asked_even_past_the_corpus():
    """The offline corpus runs out near 24k words; a 32k-token sequence repeats it."""
    import torch

    from analyses.jobs.bench_inputs import bench_tokens

    def tokenize(text):  # one token per word, BOS first
        return [0] + [len(word) for word in text.split()]

    short, long = bench_tokens(tokenize, 100), bench_tokens(tokenize, 40_000)
    assert short.shape == (1, 100) and long.shape == (1, 40_000)
    assert long[0, 0] == 0 and torch.equal(long[0, :100], short[0])
    with pytest.raises(ValueError, match="gave 1 tokens"):
        bench_tokens(lambda text: [0], 10)


def test_a_bench_where_everything_was_skipped_says_so_rather_than_print_an_empty_frame():
    skipped = pd.DataFrame(
        [{"method": "plain", "tokens": 32768, "repeat": None, "wall_s": None, "cpu_s": None,
          "peak_rss_mb": None, "peak_cuda_mb": None, "skipped": "logits alone need 32 GiB"}]
    )  # fmt: skip
    assert bench.format_summary(bench.summarise(skipped)) == "nothing was measured"
