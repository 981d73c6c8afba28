"""The `headlab` command line; kept free of torch imports so that --help is fast."""

import signal
import sys


def run() -> None:
    """The console entry point: Ctrl-C is an exit status 130 even while modules still import.

    Once interrupted, further Ctrl-C is ignored while the process exits, so a second interrupt
    during shutdown cannot turn the status into death by SIGINT; every write is atomic, so
    there is nothing left to finish.
    """
    try:
        from analyses.cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("headlab: interrupted; nothing was written", file=sys.stderr)
        code = 130
    if code == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
