"""The `headlab` command line; kept free of torch imports so that --help is fast."""

import sys


def run() -> None:
    """The console entry point: Ctrl-C is an exit status 130 even while modules still import."""
    try:
        from analyses.cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("headlab: interrupted; nothing was written", file=sys.stderr)
        code = 130
    sys.exit(code)
