"""The `headlab` command line; kept free of torch imports so that --help is fast."""

import os
import sys


def run() -> None:
    """The console entry point: Ctrl-C is an exit status 130 even while modules still import.

    An interrupted process leaves at once (`os._exit`, after flushing): the interpreter's
    shutdown (library finalizers, threads) must not turn the status back into death by SIGINT,
    and every write is atomic, so there is nothing left to finish.
    """
    try:
        from analyses.cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("headlab: interrupted; nothing was written", file=sys.stderr)
        code = 130
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)
