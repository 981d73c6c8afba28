"""`headlab induction-check`: its flags are `InductionCheckConfig`'s fields."""

from __future__ import annotations

import argparse

from analyses.cli.fields import add_options, config_from_args
from analyses.jobs.induction_check import InductionCheckConfig

DESCRIPTION = (
    "Rank heads by the induction score on held-out repeated random tokens, then per seed measure "
    "the next-token loss on fresh sequences with nothing ablated, the top-k induction heads "
    "zeroed, and k layer-matched random heads zeroed. Prints one row per (seed, condition) and "
    "a summary; writes nothing."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, InductionCheckConfig)


def command(args: argparse.Namespace) -> int:
    import pandas as pd

    from analyses.jobs import induction_check

    config = config_from_args(InductionCheckConfig, args)
    table = induction_check.run(config)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        print()
        print(induction_check.summarize(table).to_string(float_format=lambda x: f"{x:.4f}"))
    return 0
