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
        _forget_interrupts_in_exec()
    sys.exit(code)


def _forget_interrupts_in_exec() -> None:
    """CPython 3.11 marks a KeyboardInterrupt that leaves any `exec` of a string as unhandled,
    even once caught (dataclasses build their methods so: Ctrl-C while one is defined), and a
    `python -m` process so marked kills itself with SIGINT at exit instead of exiting 130. The
    mark is cleared when the next string `exec` starts (pythonrun.c, run_eval_code_obj)."""
    exec("None")
