"""The streaming engine: plan passes over prompts, run them on a backend, collect tidy rows.
Image prompts (a batch's `images`) run on the bridge path with their pixel values.

passes.py   which prompts run together, tokenized and right-padded into batches
runner.py   run(): every probe's reductions in one forward pass per batch; path choice
fast.py     the fast backend: exact pattern rows from queries and keys, in query chunks
"""

from probes.engine.passes import batches, plan_passes, tokenize_suite
from probes.engine.runner import PATHS, RESULT_COLUMNS, choose_path, run, run_batch

__all__ = [
    "PATHS",
    "RESULT_COLUMNS",
    "batches",
    "choose_path",
    "plan_passes",
    "run",
    "run_batch",
    "tokenize_suite",
]
