"""The streaming engine: plan passes over prompts, run them on a backend, collect tidy rows.

passes.py   which prompts run together, tokenized and right-padded into batches
runner.py   run() = prepare, stream (per-batch probe states), fold, restore, table; path choice
fast.py     the fast backend: exact pattern rows from queries and keys, in query chunks
images.py   image prompts through a vision-language model (head divergence with/without)
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
