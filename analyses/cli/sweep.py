"""`headlab sweep`: its arguments, the plan they describe, and the printed summary."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from analyses.cli.fields import (
    add_data_option,
    config_from_args,
    default_of,
    path_arg,
    positive_int,
    render,
    text_arg,
)
from probes.core.options import DEFAULT_MODEL, DTYPES

# Flags that describe the plan, so that they conflict with --plan (None = not given).
PLAN_FLAGS = ("model", "name", "tasks", "single_head", "top_metric", "top_probe", "top_position",
              "k", "seeds", "top_mode", "strength", "strength_heads", "attribution", "batch_size",
              "copies")  # fmt: skip
# The k grid of a top-k plan given by flags (a plan file's [[top_k]] must give its own k).
DEFAULT_K = (1, 2, 4, 8)


def _names(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names:  # `--tasks ''` must not fall back to the default task
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


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
    from analyses.sweeps.plan import PlanError, check_strength

    kind, _, values = text.partition("=")
    if not values.strip(","):
        raise argparse.ArgumentTypeError(f"{text!r} gives no values; write KIND=V1,V2,…")
    try:
        grid = [float(v) for v in _names(values)]
        check_strength(kind.strip(), tuple(grid), text)
    except PlanError as error:  # before ValueError, which it also is
        raise argparse.ArgumentTypeError(str(error)) from None
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected KIND=V1,V2,…, got {text!r}") from None
    return kind.strip(), grid


def add_arguments(sweep: argparse.ArgumentParser) -> None:
    """The plan flags default to None: what is not given takes the plan's own default (the
    `SweepPlan`/`TopK` field defaults, shown in the help; analyses.sweeps.plan is torch-free).
    The run flags have the dests of `SweepConfig`'s fields and no default here
    (argparse.SUPPRESS), so `config_from_args` leaves SweepConfig's defaults."""
    from analyses.sweeps.plan import SweepPlan, TopK

    sweep.add_argument(
        "--plan",
        dest="plan_file",
        metavar="PLAN",
        type=path_arg,
        help="TOML plan file (see analyses/sweeps/plan.py)",
    )
    sweep.add_argument(
        "--model",
        type=text_arg,
        help=f"model for a plan given by flags (default: {render(DEFAULT_MODEL)})",
    )
    sweep.add_argument("--name", help="sweep name; results go to sweep-NAME.parquet")
    sweep.add_argument("--tasks", type=_names, help="tasks: ioi, lm, niah (default: ioi)")
    sweep.add_argument(
        "--single-head",
        type=_names,
        metavar="MODES",
        help="ablate every head alone with these modes (zero,mean,uniform)",
    )
    sweep.add_argument("--top-metric", help="rank heads by this stored metric for top-k vs random")
    sweep.add_argument("--top-probe", help="probe of --top-metric, if several have it")
    sweep.add_argument("--top-position", type=int, help="position of a per-position metric")
    sweep.add_argument(
        "--k", type=_ints, help=f"grid of k for top-k (default: {render(DEFAULT_K)})"
    )
    sweep.add_argument(
        "--seeds",
        type=_ints,
        help=f"random-head seeds (default: {render(default_of(TopK, 'seeds'))})",
    )
    sweep.add_argument(
        "--top-mode", help=f"ablation mode for top-k units (default: {default_of(TopK, 'mode')})"
    )
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
    sweep.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"prompts per batch (default: {default_of(SweepPlan, 'batch_size')})",
    )
    sweep.add_argument("--copies", type=positive_int, help="interventions per forward pass")
    # SweepConfig's fields:
    unset = argparse.SUPPRESS
    sweep.add_argument(
        "--run", dest="run_id", metavar="RUN", default=unset,
        help="run to merge into (default: a run named after the plan)",
    )  # fmt: skip
    sweep.add_argument(
        "--metrics-run", default=unset, help="run whose metrics rank heads (default: --run)"
    )
    add_data_option(sweep, default=unset)
    sweep.add_argument("--device", default=unset, help="torch device: cpu, cuda, cuda:N, mps")
    sweep.add_argument(
        "--dtype", default=unset, choices=DTYPES, help="model dtype (default: float32)"
    )
    sweep.add_argument(
        "--quiet", dest="progress", action="store_false", default=unset, help="no progress bar"
    )
    sweep.add_argument(
        "--threads", type=int, metavar="N", default=unset,
        help="torch threads per computing process (default: torch's own locally, "
        "--cpus-per-worker on Ray); equal threads give bit-equal tables",
    )  # fmt: skip
    from analyses.executors import EXECUTORS

    sweep.add_argument(
        "--executor", choices=EXECUTORS, default=unset,
        help="who computes the chunks: this process (local, the default) or Ray actors (ray)",
    )  # fmt: skip
    sweep.add_argument(
        "--address", metavar="auto|HOST:PORT", default=unset,
        help="ray: join this running cluster (default: start a local one for the command)",
    )  # fmt: skip
    sweep.add_argument(
        "--workers", type=int, metavar="N", default=unset,
        help="ray: worker actors, each with the model loaded (default: as many as fit)",
    )  # fmt: skip
    sweep.add_argument(
        "--cpus-per-worker", type=float, metavar="C", default=unset,
        help="ray: CPUs (and torch threads) per worker (default: 1)",
    )  # fmt: skip
    sweep.add_argument(
        "--gpus-per-worker", type=float, metavar="G", default=unset,
        help="ray: GPUs per worker, with --device cuda (default: 0)",
    )  # fmt: skip


def plan_dict_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The plan the flags describe, as plan_from_dict reads it; what no flag gives takes the
    `SweepPlan` and `TopK` field defaults."""
    from analyses.sweeps.plan import SweepPlan, TopK

    raw: dict[str, Any] = {}
    for key in ("model", "name", "batch_size", "copies"):
        value = getattr(args, key)
        raw[key] = default_of(SweepPlan, key) if value is None else value
    if args.tasks:
        raw["tasks"] = {name: {} for name in args.tasks}
    if args.single_head:
        raw["single_head"] = {"modes": args.single_head}
    ranking = {"metric": args.top_metric}
    for key, value in (("probe", args.top_probe), ("position", args.top_position)):
        if value is not None:
            ranking[key] = value
    k = list(DEFAULT_K) if args.k is None else args.k
    if args.top_metric and not args.strength:
        seeds = list(default_of(TopK, "seeds")) if args.seeds is None else args.seeds
        mode = default_of(TopK, "mode") if args.top_mode is None else args.top_mode
        raw["top_k"] = [{**ranking, "k": k, "seeds": seeds, "mode": mode}]
    if args.strength:
        kind, values = args.strength
        strength: dict[str, Any] = {"kind": kind, "values": values}
        if args.strength_heads:
            strength["heads"] = args.strength_heads
        elif args.top_metric:
            strength["top"] = {**ranking, "k": max(k)}
        raw["strength"] = [strength]
    if args.attribution:
        raw["attribution"] = args.attribution
    return raw


def command(args: argparse.Namespace) -> int:
    from analyses.results import store
    from analyses.sweeps import runner as sweep
    from analyses.sweeps.plan import PlanError
    from analyses.sweeps.plan_file import load_plan, plan_from_dict

    flagged = ["--" + key.replace("_", "-") for key in PLAN_FLAGS if getattr(args, key) is not None]
    if args.plan_file is not None:
        if flagged:
            raise PlanError(
                f"give either --plan or plan flags, not both (got --plan and {', '.join(flagged)})"
            )
        plan, source = load_plan(args.plan_file), str(args.plan_file)
    else:
        plan, source = plan_from_dict(plan_dict_from_args(args), "command line"), "command line"
    config = config_from_args(sweep.SweepConfig, args, plan=plan, plan_source=source)
    path = sweep.run(config)
    table = store.read_table(path)
    record = store.read_manifest(config.data_dir, path.parent.name)["sweeps"][plan.name]
    print(format_sweep(table))
    session = record["last_session"]
    where = f" on {session['workers']} Ray workers" if session.get("executor") == "ray" else ""
    print(f"\n{record['n_units']} units; this session {session['units']} in "
          f"{session['sweep_s']:.1f} s{where} ({session['units_per_s']:.2f} units/s); "
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
    multi = multi[multi["condition"] != "clean"]
    ranked = multi["condition"].map(_top_or_random)
    lines += _top_versus_random(multi[ranked.notna()], ranked.dropna())
    for row in multi[ranked.isna()].itertuples():
        lines.append(f"  {row.metric} [{row.condition}] = {row.value:.4g}")
    if len(lines) > len(clean):
        lines.insert(len(clean), "  (harm: how much worse than clean; > 0 is worse)")
    return "\n".join(lines)


def _top_or_random(condition: str) -> tuple[str, str, int, str] | None:
    """(intervention, ranking, k, "top" | "random") of a top-k or random-k unit, else None."""
    from probes.core.schema import SweepCondition

    decoded = SweepCondition.decode(condition)
    if decoded.selection not in ("top", "random") or decoded.k is None:
        return None
    kind = decoded.kind + ("" if decoded.strength is None else f"={decoded.strength:g}")
    return kind, str(decoded.ranking), decoded.k, str(decoded.selection)


def _top_versus_random(rows: pd.DataFrame, keys: pd.Series) -> list[str]:
    """One line per (measure, intervention, ranking): the harm of the top-k heads against the
    mean of the layer-matched random-k controls (their range over seeds), for each k."""
    if rows.empty:
        return []
    frame = rows.assign(
        kind=[key[0] for key in keys], ranking=[key[1] for key in keys],
        k=[key[2] for key in keys], selection=[key[3] for key in keys],
    )  # fmt: skip
    lines = []
    for (metric, kind, ranking), group in frame.groupby(["metric", "kind", "ranking"], sort=True):
        seeds = int((group["selection"] == "random").groupby(group["k"]).sum().max())
        lines.append(f"  {metric} [{kind}], top-k heads by {ranking} vs k layer-matched random "
                     f"heads (mean and range over {seeds} seed{'s' * (seeds != 1)}):")  # fmt: skip
        for k, cell in group.groupby("k", sort=True):
            top = cell.loc[cell["selection"] == "top", "value"]
            randoms = cell.loc[cell["selection"] == "random", "value"]
            text = f"    k={k:<3} top {top.iloc[0]:<10.4g}" if len(top) else f"    k={k:<3}"
            if len(randoms):
                text += f" random {randoms.mean():.4g} ({randoms.min():.3g}..{randoms.max():.3g})"
            lines.append(text.rstrip())
    return lines
