"""The streaming engine: plan passes over prompts, run them on a backend, collect tidy rows.
Image prompts (a batch's `images`) run on the bridge path with their pixel values.

passes.py   which prompts run together, tokenized and right-padded into batches
runner.py   run() = prepare, stream (per-batch probe states), fold, restore, table; path choice
fast.py     the fast backend: exact pattern rows from queries and keys, in query chunks
"""

from probes.engine.passes import batches, plan_passes, tokenize_suite
from probes.engine.runner import (
    PATHS,
    RESULT_COLUMNS,
    BatchStates,
    choose_path,
    fold,
    prepare,
    restore,
    run,
    run_batch,
    stream,
    table,
)

__all__ = [
    "PATHS",
    "RESULT_COLUMNS",
    "BatchStates",
    "batches",
    "choose_path",
    "fold",
    "plan_passes",
    "prepare",
    "restore",
    "run",
    "run_batch",
    "stream",
    "table",
    "tokenize_suite",
]
