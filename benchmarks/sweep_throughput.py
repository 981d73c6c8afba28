"""Head-ablation throughput: headlab's sweep path vs a naive loop of one full forward per ablation.

    .venv/bin/python benchmarks/sweep_throughput.py --model smollm2-135m --layer-step 5

Both paths zero-ablate the same heads (every head of every `layer-step`-th layer) one at a time
on the IOI-style task and score the logit difference. The naive loop runs the whole model with
one ablation hook per pass and full logits, as one would write it by hand. The sweep path runs
each batch clean once (its cost is included), restarts at the ablated layer, stacks `copies`
ablations in one pass and unembeds only the last token. The script checks the two agree.
"""

from __future__ import annotations

import argparse
import time

import torch

from analyses.interventions.kinds import HeadAblation, hooks
from analyses.sweeps.plan import Unit
from analyses.sweeps.tasks import make_task
from analyses.sweeps.work import PreparedTask, chunks
from probes import bridge
from probes.models import load


def naive(model, task, task_batches, units) -> list[float]:
    """One full forward per ablation and batch, full logits, as one would write it by hand."""
    weight = sum(task.weight(tb) for tb in task_batches)
    values = []
    for unit in units:
        total = 0.0
        fwd_hooks = hooks([HeadAblation(unit.heads, "zero")], model.info)
        for tb in task_batches:
            logits = bridge.forward(
                model, tb.batch.tokens, fwd_hooks, attention_mask=tb.batch.attention_mask
            )
            last = logits.gather(1, tb.read_at[..., None].expand(-1, -1, logits.shape[-1]))
            total += float(task.score(last, tb)["logit_diff"])
        values.append(total / weight)
    return values


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16, help="IOI prompts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--copies", type=int, default=None, help="default: heads per layer")
    parser.add_argument("--layer-step", type=int, default=5, help="ablate every n-th layer")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load(args.model)
    info = model.info
    task = make_task("ioi", {"n_prompts": args.prompts})
    task_batches = task.prepare(model, args.batch_size)
    layers = range(0, info.n_layers, args.layer_step)
    units = [
        Unit("ioi", "zero", ((layer, head),)) for layer in layers for head in range(info.n_heads)
    ]
    copies = args.copies or info.n_heads
    print(
        f"{args.model}: {len(units)} single-head zero ablations (layers {list(layers)}), "
        f"{args.prompts} IOI prompts, batch {args.batch_size}, {copies} copies per pass"
    )

    # The machine is shared: the two paths alternate layer by layer so that load changes hit
    # both alike. The sweep's clean pass (residuals, clean score) is charged to the sweep.
    prepared, fast_s = timed(
        lambda: PreparedTask(model, task, args.batch_size, {u.first_layer for u in units})
    )
    naive_s = 0.0
    fast_values, naive_values = [], []
    for layer in layers:
        group = [unit for unit in units if unit.first_layer == layer]
        results, seconds = timed(
            lambda group=group: [
                measures["logit_diff"]
                for chunk in chunks(group, prepared.copies_per_pass(copies))
                for measures in prepared.run_stacked(chunk, reuse=True)
            ]
        )
        fast_values += results
        fast_s += seconds
        results, seconds = timed(lambda group=group: naive(model, task, task_batches, group))
        naive_values += results
        naive_s += seconds
        print(f"  layer {layer:2d}: sweep {fast_s:7.1f} s, naive {naive_s:7.1f} s so far")
    difference = max(abs(a - b) for a, b in zip(fast_values, naive_values, strict=True))
    fast_rate, naive_rate = len(units) / fast_s, len(units) / naive_s
    print(f"naive loop : {naive_s:8.1f} s  {naive_rate:6.2f} head-ablations/s")
    print(f"sweep      : {fast_s:8.1f} s  {fast_rate:6.2f} head-ablations/s (clean pass included)")
    print(
        f"speed-up   : {fast_rate / naive_rate:.2f}x; max |logit-diff difference| {difference:.2e}"
    )


if __name__ == "__main__":
    main()
