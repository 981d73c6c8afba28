"""`headlab mask-retrieval`: its flags are `MaskingConfig`'s fields (analyses/cli/fields.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analyses.cli.fields import add_options, config_from_args
from analyses.jobs.retrieval_masking import MaskingConfig
from analyses.results import store

DESCRIPTION = (
    "Mask the top-k retrieval heads of a stored retrieval run, and k random heads from the same "
    "layers, while decoding (uniform attention = the authors' mask, or zero output); store NIAH "
    "accuracy per condition beside the run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, MaskingConfig)


def latest_retrieval_run(data: Path) -> str:
    """The newest readable run under `data` that ran the retrieval probe."""
    try:
        return store.latest_run(data, where=lambda m: "retrieval" in (m.get("probes") or {}))
    except store.StoreError:
        raise store.StoreError(
            f"no run under {store.runs_root(data)} has retrieval scores; "
            "run `headlab scan --probes retrieval` first"
        ) from None


def command(args: argparse.Namespace) -> int:
    from analyses.jobs import retrieval_masking as masking

    run_id = latest_retrieval_run(args.data_dir) if args.run_id == "latest" else args.run_id
    config = config_from_args(MaskingConfig, args, run_id=run_id)
    summary = masking.run(config)
    print(f"\nretrieval-head masking on run {run_id} (masks act while decoding only):")
    print(masking.format_summary(summary))
    directory = store.run_dir(config.data_dir, run_id) / store.TABLES_DIR
    print(f"tables {masking.SUMMARY_TABLE}, {masking.SAMPLES_TABLE} written to {directory}")
    return 0
