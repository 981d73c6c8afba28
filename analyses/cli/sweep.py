"""`headlab sweep`: its arguments, the plan they describe, and the printed summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

PLAN_FLAGS = ("model", "name", "tasks", "single_head", "top_metric", "strength", "attribution",
              "batch_size", "copies")  # fmt: skip


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(item) for item in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _heads(text: str) -> list[list[int]]:
    try:
        return [[int(x) for x in item.split(".")] for item in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"heads are LAYER.HEAD,… e.g. 3.1,5.2; got {text!r}"
        ) from None


def _strength(text: str) -> tuple[str, list[float]]:
    kind, _, values = text.partition("=")
    try:
        return kind.strip(), [float(v) for v in _names(values)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--strength is KIND=V1,V2,…, got {text!r}") from None


def add_arguments(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument("--plan", type=Path, help="TOML plan file (see analyses/sweeps/plan.py)")
    sweep.add_argument("--model", help="model for a plan given by flags (default smollm2-135m)")
    sweep.add_argument("--name", help="sweep name; results go to sweep-NAME.parquet")
    sweep.add_argument("--tasks", type=_names, help="tasks: ioi, lm, niah (default ioi)")
    sweep.add_argument(
        "--single-head",
        type=_names,
        metavar="MODES",
        help="ablate every head alone with these modes (zero,mean,uniform)",
    )
    sweep.add_argument("--top-metric", help="rank heads by this stored metric for top-k vs random")
    sweep.add_argument("--top-probe", help="probe of --top-metric, if several have it")
    sweep.add_argument("--top-position", type=int, help="position of a per-position metric")
    sweep.add_argument("--k", type=_ints, default=[1, 2, 4, 8], help="grid of k for top-k")
    sweep.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="random-head seeds")
    sweep.add_argument("--top-mode", default="zero", help="ablation mode for top-k units")
    sweep.add_argument(
        "--strength",
        type=_strength,
        metavar="KIND=V1,V2",
        help="strength grid: scale, softpag, act or redistribute",
    )
    sweep.add_argument(
        "--strength-heads",
        type=_heads,
        metavar="L.H,…",
        help="heads for --strength (default: the top-k of --top-metric, k=max)",
    )
    sweep.add_argument(
        "--attribution",
        type=_names,
        metavar="MODES",
        help="attribution-patching estimates for these ablation modes",
    )
    sweep.add_argument("--batch-size", type=int, help="prompts per batch (default 16)")
    sweep.add_argument("--copies", type=int, help="interventions per forward pass")
    sweep.add_argument("--run", help="run to merge into (default: a run named after the plan)")
    sweep.add_argument("--metrics-run", help="run whose metrics rank heads (default: --run)")
    sweep.add_argument("--out", type=Path, default=Path("data"), help="data directory")
    sweep.add_argument("--device", default="cpu")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")


def plan_dict_from_args(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in ("model", "name", "batch_size", "copies"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.tasks:
        raw["tasks"] = {name: {} for name in args.tasks}
    if args.single_head:
        raw["single_head"] = {"modes": args.single_head}
    ranking = {"metric": args.top_metric}
    for key, value in (("probe", args.top_probe), ("position", args.top_position)):
        if value is not None:
            ranking[key] = value
    if args.top_metric and not args.strength:
        raw["top_k"] = [{**ranking, "k": args.k, "seeds": args.seeds, "mode": args.top_mode}]
    if args.strength:
        kind, values = args.strength
        strength: dict[str, Any] = {"kind": kind, "values": values}
        if args.strength_heads:
            strength["heads"] = args.strength_heads
        elif args.top_metric:
            strength["top"] = {**ranking, "k": max(args.k)}
        raw["strength"] = [strength]
    if args.attribution:
        raw["attribution"] = args.attribution
    return raw


def command(args: argparse.Namespace) -> int:
    from analyses.results import store
    from analyses.sweeps import runner as sweep
    from analyses.sweeps.plan import PlanError, load_plan, plan_from_dict

    flagged = [key for key in PLAN_FLAGS if getattr(args, key, None)]
    if args.plan is not None:
        if flagged:
            raise PlanError(
                f"give either --plan or plan flags, not both (got --plan and {flagged})"
            )
        plan, source = load_plan(args.plan), str(args.plan)
    else:
        plan, source = plan_from_dict(plan_dict_from_args(args), "command line"), "command line"
    config = sweep.SweepConfig(
        plan=plan, data_dir=args.out, run_id=args.run, metrics_run=args.metrics_run,
        device=args.device, progress=not args.quiet, plan_source=source,
    )  # fmt: skip
    path = sweep.run(config)
    table = store.read_table(path)
    record = store.read_manifest(args.out, path.parent.name)["sweeps"][plan.name]
    print(format_sweep(table))
    session = record["last_session"]
    print(f"\n{record['n_units']} units; this session {session['units']} in "
          f"{session['sweep_s']:.1f} s ({session['units_per_s']:.2f} units/s); "
          f"{len(table)} rows in {path}")  # fmt: skip
    return 0


def format_sweep(table: pd.DataFrame, k: int = 5) -> str:
    """Clean measures, the k most harmful single heads per task metric and condition, and the
    rank agreement of attribution patching with exact ablation."""
    from analyses.sweeps.attribution import spearman

    lines = []
    clean = table[table["condition"] == "clean"]
    for row in clean.itertuples():
        lines.append(f"  clean {row.metric} = {row.value:.4g}")
    harm = table[table["metric"].str.endswith(".harm") & table["head"].notna()]
    for (probe, metric, condition), group in harm.groupby(["probe", "metric", "condition"]):
        if not group["value"].abs().gt(0).any():
            continue  # e.g. accuracy that no single head moves
        top = group.sort_values("value", ascending=False).head(k)
        heads = ", ".join(f"L{r.layer}H{r.head}={r.value:.3g}" for r in top.itertuples())
        lines.append(f"  {probe}/{metric} [{condition}]: {heads}")
    exact = harm[harm["probe"] == "sweep"].set_index(["metric", "condition", "layer", "head"])
    estimated = harm[harm["probe"] == "attribution"]
    for (metric, condition), group in estimated.groupby(["metric", "condition"]):
        if (metric, condition) in exact.index.droplevel([2, 3]):
            pairs = exact.loc[(metric, condition), "value"]
            rho = spearman(pairs, group.set_index(["layer", "head"])["value"])
            lines.append(f"  Spearman(attribution, exact) {metric} [{condition}] = {rho:.3f}")
    multi = table[table["metric"].str.endswith(".harm") & table["head"].isna()]
    for row in multi[multi["condition"] != "clean"].itertuples():
        lines.append(f"  {row.metric} [{row.condition}] = {row.value:.4g}")
    return "\n".join(lines)
