"""Pure reshapes of a run's tidy table into what one view draws (no Streamlit, no plotting).

A "series" is one (probe, metric, condition) of per-head rows; per-position metrics (α at key k)
additionally pick a position. Heads that were not scored have no row; NaN stays NaN.

    series.py     listing, selecting and ranking per-head series; one head's profile; compare
    patterns.py   stored pooled attention patterns
    sinks.py      Sink_k^ε, α over positions, massive activations
    retrieval.py  NIAH grids and masking curves
    sweeps.py     sweep units decoded from their conditions; curves
    tokens.py     per-token rows (WAAD, FAI, T-VHD)
    top_keys.py   stored top keys of each query, for the token view
    vision.py     image prompts: stored pictures, image-token boxes, attention per image token
"""

from dashboard.frames.patterns import (
    PATTERN_METRIC,
    PATTERN_PROBE,
    PromptTokens,
    pattern_cells,
    pattern_matrix,
    pattern_prompts,
)
from dashboard.frames.retrieval import (
    MASKING_TABLE,
    NIAH_SAMPLES_TABLE,
    RETRIEVAL_PROBE,
    masking_curves,
    niah_grid,
    unmasked,
)
from dashboard.frames.series import (
    SERIES_KEYS,
    head_profile,
    head_series,
    head_values,
    in_probe_order,
    layer_profile,
    overall,
    paired_heads,
    select,
    series_label,
    settings_differences,
    top_heads,
)
from dashboard.frames.sinks import (
    massive_ratios,
    sink_map,
    sink_percent_by_layer,
)
from dashboard.frames.sweeps import (
    SWEEP_COLUMNS,
    SWEEP_PROBE,
    clean_value,
    parse_condition,
    strength_curves,
    sweep_units,
    topk_curves,
)
from dashboard.frames.tokens import (
    FUTURE_PROBE,
    prompt_series,
    token_rows,
)
from dashboard.frames.top_keys import (
    TOP_KEYS_PROBE,
    HeadTopKeys,
    TopKeysPrompt,
    entry_offset,
    head_filters,
    head_top_keys,
    top_keys_prompts,
)

__all__ = [
    "FUTURE_PROBE",
    "MASKING_TABLE",
    "NIAH_SAMPLES_TABLE",
    "PATTERN_METRIC",
    "PATTERN_PROBE",
    "RETRIEVAL_PROBE",
    "SERIES_KEYS",
    "SWEEP_COLUMNS",
    "SWEEP_PROBE",
    "TOP_KEYS_PROBE",
    "HeadTopKeys",
    "PromptTokens",
    "TopKeysPrompt",
    "clean_value",
    "entry_offset",
    "head_filters",
    "head_profile",
    "head_series",
    "head_top_keys",
    "head_values",
    "in_probe_order",
    "layer_profile",
    "masking_curves",
    "massive_ratios",
    "niah_grid",
    "overall",
    "paired_heads",
    "parse_condition",
    "pattern_cells",
    "pattern_matrix",
    "pattern_prompts",
    "prompt_series",
    "select",
    "series_label",
    "settings_differences",
    "sink_map",
    "sink_percent_by_layer",
    "strength_curves",
    "sweep_units",
    "token_rows",
    "top_heads",
    "top_keys_prompts",
    "topk_curves",
    "unmasked",
]
