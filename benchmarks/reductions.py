"""The fast path's cost per layer, piece by piece: SDPA (what a plain forward pays for
attention), headlab's exact rows and output, and each streaming probe's reduction of the rows.

    .venv/bin/python benchmarks/reductions.py --tokens 1024,4096

One layer of random queries, keys and values shaped like SmolLM2-135M's (9 query heads, 3 KV
heads, d_head 64; --heads/--kv-heads/--d-head for others), one sequence, fed in the fast path's
query chunks. Each line is the best of --repeats wall times, and its ratio to SDPA's. The rows
are the same for every probe, so the times add up to what one layer of a scan costs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from probes import attention_rows
from probes.core.types import Batch, ModelInfo
from probes.engine import fast
from probes.families.attention_stats import AttentionStatsProbe
from probes.families.detectors import DetectorProbe
from probes.families.future_attention import FutureAttentionProbe
from probes.families.pattern_class import PatternClassProbe
from probes.families.sink import SinkProbe
from probes.families.top_keys import TopKeysProbe

PROBES = {
    "sink": SinkProbe,
    "attention_stats": AttentionStatsProbe,
    "future_attention": FutureAttentionProbe,
    "pattern_class": PatternClassProbe,
    "detectors": DetectorProbe,
    "top_keys": TopKeysProbe,
}


def best_of(repeats: int, function: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(n: int, args: argparse.Namespace, names: list[str]) -> None:
    """Print one layer's pieces at n tokens."""
    info = ModelInfo("bench", 1, args.heads, args.kv_heads, args.d_head, 576, 2**17, 0)
    generator = torch.Generator().manual_seed(0)
    shape = (1, args.kv_heads, n, args.d_head)
    query = torch.randn(1, args.heads, n, args.d_head, generator=generator)
    key = torch.randn(shape, generator=generator)
    value = torch.randn(shape, generator=generator)
    tokens = torch.randint(0, 1000, (1, n), generator=generator)
    batch = Batch(tokens, torch.tensor([n]), ("p",))
    rep = args.heads // args.kv_heads
    k_rep, v_rep = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scale = args.d_head**-0.5
    step = attention_rows.CHUNK_QUERIES
    chunks = [(start, min(start + step, n)) for start in range(0, n, step)]
    workspace = attention_rows.Workspace()

    def sdpa() -> None:
        torch.nn.functional.scaled_dot_product_attention(query, k_rep, v_rep, is_causal=True)

    # The fused route the issue proposed: the kernel's output and log-sum-exp, then each
    # statistic as the pattern times extra value columns. The CPU kernel needs values as wide
    # as the queries, so each statistic is one more whole pass: P·K for the entropy
    # (H = lse − scale·q·(P·K)), P·position for the mean distance (padded to d_head).
    fused_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    positions = torch.arange(n, dtype=query.dtype)[:, None].expand(1, args.heads, n, 1)
    positions = torch.nn.functional.pad(positions, (0, args.d_head - 1)).contiguous()

    def fused_output_and_lse() -> None:
        fused_kernel(query, k_rep, v_rep, 0.0, True)

    def fused_entropy_and_distance() -> None:
        fused_kernel(query, k_rep, k_rep, 0.0, True)
        fused_kernel(query, k_rep, positions, 0.0, True)

    with_entropy = any("row_entropy" in PROBES[name].reads for name in names)
    rows_of = (
        attention_rows.pattern_rows_and_entropy if with_entropy else attention_rows.pattern_rows
    )

    def rows_and_output() -> None:  # as the fast path runs: one reused workspace
        for start, stop in chunks:
            rows = rows_of(query, key, None, scale, start, stop, workspace=workspace)
            attention_rows.rows_times_values(rows[0] if with_entropy else rows, value)

    chunk_rows = [
        attention_rows.pattern_rows_and_entropy(query, key, None, scale, *chunk) for chunk in chunks
    ]

    def reduce(name: str) -> Callable[[], None]:
        def run() -> None:
            probe = PROBES[name](info)
            probe.start_batch(batch)
            for (start, _), (rows, entropy) in zip(chunks, chunk_rows, strict=True):
                fast.feed(probe, 0, rows, start, 0, batch, entropy if with_entropy else None)
            probe.end_batch(batch)

        return run

    base = best_of(args.repeats, sdpa)
    print(f"\n{n} tokens, one layer ({args.heads} heads)   seconds   vs SDPA")
    print(f"  {'sdpa':<26}{base:9.4f}   1.00")
    total = 0.0
    label = "rows + entropy + output" if with_entropy else "rows + output"
    pieces = [(label, rows_and_output)] + [(name, reduce(name)) for name in names]
    for label, function in pieces:
        seconds = best_of(args.repeats, function)
        total += seconds
        print(f"  {label:<26}{seconds:9.4f}   {seconds / base:.2f}")
    print(f"  {'headlab layer':<26}{total:9.4f}   {total / base:.2f}")
    print("  the fused route instead (top keys would still need the rows):")
    for label, function in (
        ("output + lse", fused_output_and_lse),
        ("+ entropy, mean distance", fused_entropy_and_distance),
    ):
        seconds = best_of(args.repeats, function)
        print(f"  {label:<26}{seconds:9.4f}   {seconds / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1024,4096")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", default=",".join(PROBES))
    args = parser.parse_args()
    for n in (int(t) for t in args.tokens.split(",")):
        measure(n, args, args.probes.split(","))


if __name__ == "__main__":
    main()
