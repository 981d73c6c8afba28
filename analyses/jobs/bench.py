"""`headlab bench`: what a probe scan costs next to a plain forward pass, at growing lengths.

Three ways to get the same per-head metrics (`--probes`, by default the default scan's streaming
probes) on one sequence of T tokens, each measured in a fresh process (so peak RSS is its own)
and repeated, in the model dtype `--dtype` on `--device`:
  plain     the Hugging Face model's forward with SDPA attention: the floor, no metrics at all
  naive     the TransformerLens way: run_with_cache of every layer's hook_pattern, then reduce
  headlab   headlab's engine (the fast path unless --path says otherwise)
and, on request, `body`: the plain forward without the unembedding, which no metric needs and
the fast path skips, so a stricter floor. Wall and CPU time are the forward (or scan) alone,
model loading excluded; peak RSS is the whole process, imports included (the plain process
imports transformers only; the others also TransformerLens). On CUDA the times are synchronised
and the peak CUDA memory of the forward is reported too.

Shared machines drift: the same forward can take 1.5x longer a minute later. So each repeat runs
every (T, method) once before the next repeat starts, and the summary gives, beside the ratio of
medians, the spread of the per-repeat ratios of measurements taken side by side.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analyses.jobs.bench_inputs import bench_tokens, plain_model
from analyses.jobs.scan import DEFAULT_PROBES  # what the default scan streams (all stream)
from analyses.results import store
from probes.core.errors import ConfigError
from probes.core.options import (
    DATA_OPTION,
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DTYPES,
    ENGINE_PATHS,
    check_device,
    check_dtype,
    check_engine_path,
    check_positive,
)

if TYPE_CHECKING:
    from probes.core.types import ModelInfo

METHODS = ("plain", "naive", "headlab")
OPTIONAL_METHODS = ("body",)
DEFAULT_TOKENS = (512, 1024, 2048, 4096, 8192)
# Fraction of physical memory the naive way's cached patterns may take before we skip it.
NAIVE_MEMORY_FRACTION = 0.5
# The same for the plain forward's logits on the CPU: nearly all it holds at long context
# (Gemma-3-270m at 16k: 17 GB of logits over its 262,144 tokens, 18.3 GB peak RSS).
PLAIN_MEMORY_FRACTION = 0.9
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class BenchConfig:
    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "registry name, Hugging Face id, or local dir"}
    )
    tokens: tuple[int, ...] = field(
        default=DEFAULT_TOKENS, metadata={"help": "comma-separated sequence lengths"}
    )
    methods: tuple[str, ...] = field(
        default=METHODS,
        metadata={
            "choices": METHODS + OPTIONAL_METHODS,
            "help": "comma-separated; 'body' is the plain forward without the unembedding",
        },
    )
    probes: tuple[str, ...] = field(
        default=DEFAULT_PROBES, metadata={"help": "comma-separated probes the scan computes"}
    )
    repeats: int = field(default=3, metadata={"help": "measurements per (T, method)"})
    path: str = field(
        default="auto", metadata={"choices": ENGINE_PATHS, "help": "headlab engine path"}
    )
    data_dir: Path = field(
        default=DEFAULT_DATA, metadata={**DATA_OPTION, "help": "data directory, holding bench/"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N, mps"})
    dtype: str = field(
        default="float32",
        metadata={"choices": DTYPES, "help": "weights and activations (sums stay float32/64)"},
    )
    timeout_s: float = field(
        default=1800.0, metadata={"help": "seconds one measurement process may take"}
    )
    chunk_mb: int = field(
        default=0,
        metadata={"help": "fast path: MiB of pattern rows per query chunk (0: the engine's)"},
    )
    progress: bool = field(
        default=True, metadata={"flag": "--quiet", "invert": True, "help": "no progress bar"}
    )

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ConfigError("tokens: give at least one sequence length")
        for n_tokens in self.tokens:
            check_positive("tokens", n_tokens)
        if not self.methods:
            raise ConfigError(f"methods: give at least one of {METHODS + OPTIONAL_METHODS}")
        unknown = sorted(set(self.methods) - set(METHODS + OPTIONAL_METHODS))
        if unknown:
            raise ConfigError(
                f"unknown bench methods {unknown}; choose from {METHODS + OPTIONAL_METHODS}"
            )
        check_positive("repeats", self.repeats)
        if not self.probes:
            raise ConfigError("probes: give at least one probe")
        check_device(self.device)
        check_dtype(self.dtype)
        check_engine_path(self.path)
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be more than 0 seconds, got {self.timeout_s!r}")
        if self.chunk_mb:
            check_positive("chunk_mb", self.chunk_mb)


def naive_pattern_bytes(n_layers: int, n_heads: int, n_tokens: int) -> int:
    """Memory of every layer's fp32 [head, T, T] pattern, which run_with_cache keeps."""
    return n_layers * n_heads * n_tokens * n_tokens * 4


def logits_bytes(d_vocab: int, n_tokens: int, dtype: str) -> int:
    """Memory of the plain forward's [T, vocab] logits, in the model's dtype."""
    return n_tokens * d_vocab * BYTES_PER_ELEMENT[dtype]


def skip_reason(config: BenchConfig, info: ModelInfo, method: str, n_tokens: int) -> str | None:
    """Why (method, T) cannot fit in this machine's memory, judged before it runs; None if it
    may. The naive way's cached patterns anywhere; the plain forward's logits on the CPU (on a
    GPU an out-of-memory error is quick and recorded like any failure)."""
    if method == "naive":
        needed = naive_pattern_bytes(info.n_layers, info.n_heads, n_tokens)
        if needed > NAIVE_MEMORY_FRACTION * physical_memory_bytes():
            return f"patterns alone need {needed / 2**30:.0f} GiB"
    if method == "plain" and config.device == "cpu" and info.d_vocab is not None:
        needed = logits_bytes(info.d_vocab, n_tokens, config.dtype)
        memory = physical_memory_bytes()
        if needed > PLAIN_MEMORY_FRACTION * memory:
            return f"logits alone need {needed / 2**30:.0f} GiB of {memory / 2**30:.0f} GiB"
    return None


def physical_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def measure_once(
    model_name: str,
    method: str,
    n_tokens: int,
    path: str,
    probe_names: tuple[str, ...] = DEFAULT_PROBES,
    dtype: str = "float32",
    device: str = "cpu",
    chunk_mb: int = 0,
) -> dict:
    """Run one measurement in this process; return wall and CPU seconds and peak RSS (and peak
    CUDA memory on a GPU). `chunk_mb` > 0 sets the fast path's chunk of pattern rows."""
    import torch

    if method in ("plain", "body"):
        hf_model, tokenize = plain_model(model_name, dtype, device)
        tokens = bench_tokens(tokenize, n_tokens).to(device)
        forward = hf_model if method == "plain" else getattr(hf_model, "model", hf_model)
        started = _started(device)
        with torch.inference_mode():
            forward(input_ids=tokens, use_cache=False)
        return _measured(started, device)

    from probes import engine
    from probes.core import hook_names as hooks
    from probes.core.probe import StreamingProbe
    from probes.core.types import Batch
    from probes.families import get_probe
    from probes.models import load

    model = load(model_name, dtype=dtype, device=device)
    tokens = bench_tokens(model.tokenize, n_tokens).to(device)
    batch = Batch(tokens, torch.tensor([n_tokens], device=device), ("bench",))
    probes = [get_probe(name)(model.info) for name in probe_names]
    started = _started(device)
    if method == "naive":  # every layer's pattern cached, then reduced
        names = [hooks.attn(layer, "pattern") for layer in range(model.info.n_layers)]
        streaming = [probe for probe in probes if isinstance(probe, StreamingProbe)]
        with torch.inference_mode():
            _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
            for probe in streaming:
                probe.start_batch(batch)
                for layer, name in enumerate(names):
                    probe.on_pattern(layer, cache[name], 0, batch)
                probe.end_batch(batch)
    elif method == "headlab":
        chosen = engine.choose_path(model, probes, path)
        if chosen == "fast" and chunk_mb:
            from probes.engine import fast

            streaming = [probe for probe in probes if isinstance(probe, StreamingProbe)]
            fast.run_batch(model, batch, streaming, chunk_bytes=chunk_mb * 2**20)
        else:
            engine.run_batch(model, batch, probes, path=chosen)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS + OPTIONAL_METHODS}")
    return _measured(started, device)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _started(device: str = "cpu") -> tuple[float, float]:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    return time.perf_counter(), _cpu_seconds()


def _measured(started: tuple[float, float], device: str = "cpu") -> dict:
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize(device)  # CUDA kernels run asynchronously: wait before timing
    wall, cpu = time.perf_counter() - started[0], _cpu_seconds() - started[1]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measured = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_kib / 1024}
    if cuda:
        measured["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return measured


def measure_in_subprocess(config: BenchConfig, method: str, n_tokens: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "analyses.jobs.bench",
        config.model,
        method,
        str(n_tokens),
        config.path,
        ",".join(config.probes),
        config.dtype,
        config.device,
        str(config.chunk_mb),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"took over --timeout-s {config.timeout_s:g} s"}
    if result.returncode != 0:  # e.g. out of memory: recorded, and the other measurements go on
        tail = result.stderr.strip().splitlines()[-2:]
        return {"skipped": f"failed: {' | '.join(tail)}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(config: BenchConfig) -> pd.DataFrame:
    """Measure every (T, method) `repeats` times, a whole round of them per repeat; one row per
    measurement, plus one per skipped (T, method)."""
    from tqdm.auto import tqdm

    from analyses.jobs.scan import check_writable
    from probes.core.probe import StreamingProbe
    from probes.families import get_probe
    from probes.models import load, random_shapes
    from probes.models.devices import check_device_available

    check_writable(Path(config.data_dir) / "bench")  # before the measurements, not after
    for name in config.probes:
        # an unknown probe is named before anything is measured, and so is one that
        # decodes (the bench times one forward pass)
        if not issubclass(get_probe(name), StreamingProbe):
            raise ConfigError(f"--probes: {name!r} is not a streaming probe; bench times those")
    if config.model in random_shapes.SHAPES:  # its shape, without drawing 8B weights
        check_device_available(config.device)
        info = random_shapes.model_info(config.model)
    else:
        info = load(config.model, device=config.device).info
    too_long = [t for t in config.tokens if t > info.n_ctx]
    if too_long:
        raise ConfigError(
            f"--tokens: T={too_long[0]} exceeds the {info.n_ctx}-token context of {config.model!r}"
        )
    rows, plan = [], []
    for n_tokens in config.tokens:
        for method in config.methods:
            skipped = skip_reason(config, info, method, n_tokens)
            if skipped is not None:
                rows.append({"method": method, "tokens": n_tokens, "skipped": skipped})
            else:
                plan.append((n_tokens, method))
    with tqdm(total=len(plan) * config.repeats, desc="bench", disable=not config.progress) as bar:
        for repeat in range(config.repeats):
            for n_tokens, method in plan:
                measured = measure_in_subprocess(config, method, n_tokens)
                rows.append({"method": method, "tokens": n_tokens, "repeat": repeat, **measured})
                bar.update(1)
    columns = ["method", "tokens", "repeat", "wall_s", "cpu_s", "peak_rss_mb", "peak_cuda_mb",
               "skipped"]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)


def summarise(measurements: pd.DataFrame) -> pd.DataFrame:
    """Medians per (T, method); headlab's ratios to each baseline that was measured (ratio of
    medians); for the time against plain and body, also the lowest and highest ratio of two
    measurements from the same repeat."""
    done = measurements[measurements["skipped"].isna()]
    on_gpu = "peak_cuda_mb" in done and done["peak_cuda_mb"].notna().any()
    measures = ["wall_s", "peak_rss_mb", *(["peak_cuda_mb"] if on_gpu else [])]
    medians = done.groupby(["tokens", "method"])[measures].median().unstack()
    table = pd.DataFrame(index=sorted(measurements["tokens"].unique()))
    for method in METHODS + OPTIONAL_METHODS:
        if ("wall_s", method) in medians:
            table[f"{method}_s"] = medians[("wall_s", method)]
            table[f"{method}_mb"] = medians[("peak_rss_mb", method)]
            if on_gpu:
                table[f"{method}_cuda_mb"] = medians[("peak_cuda_mb", method)]
    walls = done.pivot_table(index=["tokens", "repeat"], columns="method", values="wall_s")
    for baseline in ("plain", "body", "naive"):
        if "headlab_s" not in table or f"{baseline}_s" not in table:
            continue
        table[f"time_vs_{baseline}"] = table["headlab_s"] / table[f"{baseline}_s"]
        if baseline != "naive":
            paired = (walls["headlab"] / walls[baseline]).groupby(level="tokens")
            table[f"{baseline}_lo"], table[f"{baseline}_hi"] = paired.min(), paired.max()
        table[f"rss_vs_{baseline}"] = table["headlab_mb"] / table[f"{baseline}_mb"]
        if on_gpu:
            table[f"cuda_mb_over_{baseline}"] = (
                table["headlab_cuda_mb"] - table[f"{baseline}_cuda_mb"]
            )
    table.index.name = "tokens"
    return table


def save(measurements: pd.DataFrame, config: BenchConfig) -> Path:
    """Measurements to data/bench/<time>-<model>.parquet, written atomically."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(config.data_dir) / "bench" / f"{stamp}-{config.model}.parquet"
    store.write_side_table(path, measurements.assign(model=config.model), asdict(config))
    return path


def format_summary(table: pd.DataFrame) -> str:
    if table.empty:  # every (T, method) skipped: the skips print below, not an empty frame
        return "nothing was measured"
    return table.to_string(float_format=lambda value: f"{value:.2f}", na_rep="skipped")


def _worker() -> None:
    """`python -m analyses.jobs.bench MODEL METHOD T PATH PROBES DTYPE DEVICE CHUNK_MB`: one
    measurement, printed as JSON."""
    model, method, n_tokens, path, probes, dtype, device, chunk_mb = sys.argv[1:9]
    print(json.dumps(measure_once(model, method, int(n_tokens), path, tuple(probes.split(",")),
                                  dtype, device, int(chunk_mb))))  # fmt: skip


if __name__ == "__main__":
    _worker()
