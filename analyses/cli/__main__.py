"""`python -m analyses.cli ...` is `headlab ...`."""

from analyses.cli import run

run()
