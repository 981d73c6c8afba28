"""What each stored metric means, in one sentence a researcher can check against the paper.

The dashboard shows these beside every number (colour bars, hovers, a head's page) and the API's
`hl.define` returns them. One entry per metric the schema declares (`schema.PROBE_METRICS`); a
contract test keeps the two in step. Torch-free: the dashboard reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.core import schema


@dataclass(frozen=True)
class Definition:
    name: str  # a short axis / colour-bar label
    meaning: str  # what the number is, with its source
    higher: str = ""  # what a high value says about the head ("" where the number is a label)


DEFINITIONS: dict[tuple[str, str], Definition] = {
    ("sink", "alpha"): Definition(
        "α (attention to key k)",
        "mean attention queries i ≥ k pay to key k, A[i, k] averaged over queries and prompts "
        "(Gu et al. 2024); the head sinks on k when α > ε",
        "the head parks attention on key k (an attention sink)",
    ),
    ("sink", "sink_rate"): Definition(
        "sink rate",
        "share of prompts on which the head's α at key k exceeds ε (Gu et al. 2024)",
        "the head sinks on k on most prompts",
    ),
    ("sink", "hidden_sink_count"): Definition(
        "hidden sinks",
        "number of keys k > 0 whose mean received attention exceeds the hidden-sink threshold "
        "(0.1 by default; ACT, Yu et al. 2024)",
        "the head has sinks beyond the first token",
    ),
    ("sink", "hidden_sink_rate"): Definition(
        "hidden-sink rate",
        "share of prompts on which the head has at least one hidden sink (a key k > 0 above "
        "the threshold; ACT, Yu et al. 2024)",
        "the head often sinks beyond the first token",
    ),
    ("sink", "massive_ratio"): Definition(
        "max |h| / median |h|",
        "per layer: the largest residual-stream activation at the sink token (or at any other "
        "token) over the median |h| (massive activations, Sun et al. 2024)",
        "the layer carries a massive activation",
    ),
    ("sink", "visual_sink_alpha"): Definition(
        "max α on image tokens",
        "image prompts only: the largest α over the image's tokens (the head's strongest visual "
        "sink token), averaged over image prompts",
        "the head parks attention on one image token (a visual sink)",
    ),
    ("sink", "visual_sink"): Definition(
        "visual sink token",
        "image prompts only, per prompt: the image tokens with the largest α averaged over all "
        "heads and layers (position = the token's index in the prompt); the top few per prompt",
        "the whole model parks attention on this image token",
    ),
    ("sink", "massive_visual_sink"): Definition(
        "massive visual sink",
        "image prompts only, per prompt: an image token whose layer input, RMS-normed, exceeds τ "
        "(20) in a sink dimension (one where the BOS does), the visual-sink paper's selection; "
        "value = the number of layers in which it does",
        "the token carries the sink's massive activation in many layers",
    ),
    ("sink", "massive_visual_sink_count"): Definition(
        "visual sink tokens",
        "image prompts only, per prompt and layer: how many image tokens have a massive "
        "activation (RMS-normed value > τ) in a sink dimension at the layer's input",
        "the layer has many visual sink tokens",
    ),
    ("sink", "visual_sink_share"): Definition(
        "image share on sinks",
        "image prompts only: share of a text query's image attention (queries after the image) "
        "that lands on the visual sink tokens found by massive activation, averaged",
        "the head's image attention goes to sink tokens, not to the image's content",
    ),
    ("sink", "image_centric_rate"): Definition(
        "image-centric rate",
        "image prompts only: share of text queries after the image for which the head is "
        "image-centric (visual sinks hold at most ρ = 0.5 of its image attention and the image "
        "at least 0.2 of its attention; VisAttnSink's HeadFork), the heads VAR edits",
        "the head reads the image's content, not its sink tokens",
    ),
    ("image_attention", "image_share"): Definition(
        "attention on the image",
        "image prompts only: share of the attention of the text after the image (each real query "
        "past the image's last token and the marker closing it, e.g. Qwen's <|vision_end|>) "
        "that lands on any image token, averaged over image prompts",
        "the head reads the image when the text is processed (an image-centric head)",
    ),
    ("attention_stats", "entropy"): Definition(
        "entropy (nats)",
        "attention entropy −Σ_k A[q, k] log A[q, k], averaged over queries",
        "the head spreads its attention",
    ),
    ("attention_stats", "entropy_normalized"): Definition(
        "normalised entropy",
        "attention entropy over log(q + 1), the entropy of uniform attention over the visible "
        "keys: 1 = uniform, 0 = one key",
        "the head attends nearly uniformly",
    ),
    ("attention_stats", "mean_attention_distance"): Definition(
        "mean distance (tokens)",
        "Σ_k A[q, k]·(q − k), averaged over queries: how far back the head looks",
        "the head looks far back",
    ),
    ("detectors", "previous_token"): Definition(
        "previous-token score",
        "mean attention from each token to the token before it (TransformerLens's detector)",
        "the head attends to the previous token",
    ),
    ("detectors", "duplicate_token"): Definition(
        "duplicate-token score",
        "mean attention from each token to earlier copies of itself",
        "the head finds repeated tokens",
    ),
    ("detectors", "induction"): Definition(
        "induction score",
        "mean attention from each token to the token after an earlier copy of it, on repeated "
        "random sequences (Olsson et al. 2022)",
        "the head completes [A][B] … [A] → [B]",
    ),
    ("future_attention", "mean_attention_distance"): Definition(
        "mean distance (tokens)",
        "mean backward attention distance over the scored positions, which splits heads into "
        "local and global (arXiv 2510.13554)",
        "the head is global",
    ),
    ("future_attention", "locality"): Definition(
        "local / global",
        "the head's class by mean attention distance (arXiv 2510.13554)",
    ),
    ("future_attention", "waad"): Definition(
        "WAAD_t",
        "windowed average attention distance of the local heads at token t, "
        "Σ_s A_loc(t, s)·min(t − s, W) (arXiv 2510.13554, Def. 4.1)",
        "token t looks further back",
    ),
    ("future_attention", "fai"): Definition(
        "FAI_s",
        "future attention influence: mean attention the global heads pay to token s from tokens "
        "10–50 positions later (arXiv 2510.13554, Def. 4.2)",
        "later tokens anchor on s",
    ),
    ("pattern_class", "pattern_class"): Definition(
        "pattern class",
        "the simplest sparse mask (local, sink, vertical-slash, block-sparse, in that order) "
        "whose recall reaches the threshold at an equal key budget, else diffuse (after "
        "MInference)",
    ),
    ("pattern_class", "recall_local"): Definition(
        "local recall",
        "share of attention the nearest keys hold, at the mask budget (after MInference)",
        "local head",
    ),
    ("pattern_class", "recall_sink"): Definition(
        "sink recall",
        "share of attention the first keys plus the nearest hold (StreamingLLM's Λ-shape)",
        "sink-shaped head",
    ),
    ("pattern_class", "recall_vertical_slash"): Definition(
        "vertical-slash recall",
        "share of attention the top key columns and diagonals hold (after MInference)",
        "vertical-slash head",
    ),
    ("pattern_class", "recall_block_sparse"): Definition(
        "block-sparse recall",
        "share of attention the top key blocks of each query block hold (after MInference)",
        "block-sparse head",
    ),
    ("pattern", "attention"): Definition(
        "attention mass",
        "pooled attention from a query block to a key block on a stored prompt",
        "the query block attends to the key block",
    ),
    ("top_keys", "top_k_mass"): Definition(
        "top-k mass",
        "mean share of a query's attention that its k most-attended keys hold, on the stored "
        "prompts (k = 8 by default)",
        "the head attends to a few keys",
    ),
    ("divergence", "vhd"): Definition(
        "VHD",
        "distance between the head's output with and without the segment (the image) in "
        "context (hook_z), at the step producing each answer token (generated greedily with "
        "the image for image prompts), averaged over the answer tokens (arXiv 2412.13949)",
        "the head depends on the segment",
    ),
    ("divergence", "t_vhd"): Definition(
        "T-VHD",
        "mean of the k largest head divergences at token t (arXiv 2412.13949)",
        "token t depends on the segment",
    ),
    ("retrieval", "retrieval_score"): Definition(
        "retrieval score",
        "share of needle tokens the head copies: its top-1 key is in the needle and holds the "
        "token generated, averaged over answered samples (Wu et al. 2024); > 0.1 is a "
        "retrieval head",
        "the head copies from the context",
    ),
    ("retrieval", "niah_accuracy"): Definition(
        "NIAH accuracy",
        "share of needle-in-a-haystack samples answered (ROUGE-1 recall > 0.5)",
        "the model retrieves the needle",
    ),
    ("retrieval", "niah_recall"): Definition(
        "NIAH recall", "mean ROUGE-1 recall of the answer against the needle", "better answers"
    ),
}

HARM = (
    "how much worse the task got than clean: clean − edited for a measure where higher is better, "
    "edited − clean for a loss; positive = the edit hurt"
)


def define(probe: str, metric: str) -> Definition:
    """The definition of `probe/metric`; sweep measures ("ioi.logit_diff", "… .harm") and
    attribution estimates get a generic one naming the task."""
    known = DEFINITIONS.get((probe, metric))
    if known is not None:
        return known
    if probe in (schema.SWEEP_PROBE, schema.ATTRIBUTION_PROBE):
        estimate = "attribution-patching estimate of " if probe == schema.ATTRIBUTION_PROBE else ""
        if metric.endswith(".harm"):
            measure = metric.removesuffix(".harm")
            return Definition(f"harm of {measure}", f"{estimate}{measure} harm: {HARM}")
        return Definition(metric, f"{estimate}task measure {metric} with the edit applied")
    return Definition(metric, f"{probe}/{metric} (no definition recorded)")


def label(probe: str, metric: str) -> str:
    """`name` of the definition: what a colour bar or axis says."""
    return define(probe, metric).name


def hover(probe: str, metric: str) -> str:
    """One line for a hover or `help=`: the meaning, and what a high value says."""
    definition = define(probe, metric)
    return definition.meaning + (f". High: {definition.higher}." if definition.higher else ".")
