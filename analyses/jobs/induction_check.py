"""Are the induction heads the detector finds causal?

Rank heads by TransformerLens' induction score on repeated random tokens [BOS, r, r] (held-out
sequences, `detect_seed`), then for each evaluation seed draw fresh sequences and a fresh set of
`top_k` random heads from the rest, and measure the next-token loss on the repeated half with
nothing ablated, the top-k induction heads zeroed, and the random heads zeroed (hook_z = 0, via
`analyses.interventions.HeadAblation`). If the heads are causal, zeroing them raises the
repeated-half loss far more than zeroing random heads, and leaves the first half (which no
head can predict) about as it was. The three conditions share one forward pass per batch.

    headlab induction-check --seeds 1,2,3,4,5

The module imports torch only inside functions, so the CLI can read `InductionCheckConfig`
(its flags) without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from analyses.interventions.controls import layer_matched_random_heads
from analyses.results.ranking import rank_heads
from probes.core.errors import ConfigError
from probes.core.options import DEFAULT_MODEL, DTYPES, check_device, check_dtype, check_positive

if TYPE_CHECKING:
    import torch

    from analyses.interventions.kinds import Head

CONDITIONS = ("clean", "top", "random")


@dataclass(frozen=True)
class InductionCheckConfig:
    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "registry name, Hugging Face id, or local dir"}
    )
    top_k: int = field(default=5, metadata={"help": "induction heads to ablate"})
    n_sequences: int = field(default=8, metadata={"help": "repeated random sequences per seed"})
    half_len: int = field(default=48, metadata={"help": "random tokens in each half"})
    detect_seed: int = field(
        default=0, metadata={"help": "seed of the sequences that rank the heads, never evaluated"}
    )
    seeds: tuple[int, ...] = field(
        default=(1, 2, 3, 4, 5),
        metadata={"help": "evaluation seeds; each draws new sequences and new random heads"},
    )
    batch_size: int = field(default=4, metadata={"help": "sequences per forward pass"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N, mps"})
    dtype: str = field(
        default="float32",
        metadata={"choices": DTYPES, "help": "weights and activations (sums stay float32/64)"},
    )

    def __post_init__(self) -> None:
        for name in ("top_k", "n_sequences", "batch_size"):
            check_positive(name, getattr(self, name))
        half = self.half_len  # the first half's loss needs a token after the first
        if isinstance(half, bool) or not isinstance(half, int) or half < 2:
            raise ConfigError(f"half_len must be a whole number ≥ 2, got {self.half_len!r}")
        if not self.seeds:
            raise ConfigError("seeds: give at least one evaluation seed")
        if self.detect_seed in self.seeds:
            raise ConfigError(
                f"detect_seed={self.detect_seed} ranks the heads, so it must not be one of the "
                f"evaluation seeds {','.join(map(str, self.seeds))}"
            )
        check_device(self.device)
        check_dtype(self.dtype)


def induction_scores(model, config: InductionCheckConfig) -> pd.DataFrame:
    """Per head induction score (and the other detectors) on the `detect_seed` sequences."""
    from probes import engine
    from probes.families.detectors import DetectorParams, DetectorProbe
    from probes.inputs.prompts import PromptSuite

    params = DetectorParams(config.n_sequences, config.half_len, config.detect_seed)
    probe = DetectorProbe(model.info, params)
    table = engine.run(
        model,
        [probe],
        PromptSuite("none", (), "none"),
        batch_size=config.batch_size,
        progress=False,
    )
    return table.pivot_table(index=["layer", "head"], columns="metric", values="value")


def top_heads(scores: pd.DataFrame, k: int) -> list[Head]:
    """The k heads with the highest induction score (analyses.results.ranking's order)."""
    rows = scores["induction"].rename("value").reset_index().assign(metric="induction")
    return [head for head, _ in rank_heads(rows, "induction")[:k]]


def next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos − 1]: −log p(tokens[t + 1] | tokens[≤ t])."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


def seed_losses(model, config: InductionCheckConfig, seed: int, ablations: dict[str, list[Head]]):
    """Mean loss on the first and the repeated half per condition, for one seed's sequences."""
    import torch

    from analyses.interventions import kinds as interventions
    from analyses.interventions.kinds import HeadAblation
    from probes import bridge
    from probes.inputs.synthetic import repeated_random_prompts

    prompts = repeated_random_prompts(
        model, config.n_sequences, config.half_len, seed, "induction_check"
    )
    copies = [[HeadAblation(tuple(ablations[c]))] if ablations[c] else [] for c in CONDITIONS]
    fwd_hooks = interventions.stacked_hooks(copies, model.info)
    half, offset = config.half_len, int(model.info.bos_token_id is not None)
    sums = torch.zeros(len(CONDITIONS), 2, dtype=torch.float64)
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        tokens = torch.tensor([p.tokens for p in chunk], device=model.device)
        stacked = tokens.repeat(len(CONDITIONS), 1)  # copy-major, as stacked_hooks expects
        logits = bridge.forward(model, stacked, fwd_hooks)
        losses = next_token_losses(logits, stacked).view(len(CONDITIONS), len(chunk), -1)
        # loss index t predicts token t + 1: first half = tokens offset+1 … offset+half−1
        # (the first random token has no context), repeated half = the next `half` tokens
        first = losses[:, :, offset : offset + half - 1]
        repeated = losses[:, :, offset + half - 1 : offset + 2 * half - 1]
        sums[:, 0] += first.double().sum((1, 2)).cpu()
        sums[:, 1] += repeated.double().sum((1, 2)).cpu()
    counts = torch.tensor([len(prompts) * (half - 1), len(prompts) * half], dtype=torch.float64)
    return sums / counts


def run(config: InductionCheckConfig, model=None) -> pd.DataFrame:
    """One row per (seed, condition): the heads ablated and the mean losses; `model` may be a
    LoadedModel already in memory (else `config.model` is loaded)."""
    import torch

    from probes.models import load

    torch.manual_seed(0)
    model = model or load(config.model, device=config.device, dtype=config.dtype)
    n_heads = model.info.n_layers * model.info.n_heads
    if 2 * config.top_k > n_heads:  # the top heads and as many random ones, all distinct
        raise ConfigError(
            f"--top-k {config.top_k}: {config.model!r} has {n_heads} heads, so at most "
            f"{n_heads // 2} top heads leave room for as many random ones"
        )
    scores = induction_scores(model, config)
    top = top_heads(scores, config.top_k)
    rows = []
    for seed in config.seeds:
        ablations = {
            "clean": [],
            "top": top,
            "random": list(
                layer_matched_random_heads(top, model.info.n_layers, model.info.n_heads, seed)
            ),
        }
        losses = seed_losses(model, config, seed, ablations)
        clean_repeated = losses[0, 1].item()
        for index, condition in enumerate(CONDITIONS):
            rows.append(
                {
                    "model": config.model,
                    "seed": seed,
                    "condition": condition,
                    "heads": ",".join(f"L{layer}H{head}" for layer, head in ablations[condition]),
                    "induction_score": float(
                        sum(scores.loc[h, "induction"] for h in ablations[condition])
                        / max(len(ablations[condition]), 1)
                    ),
                    "loss_first_half": losses[index, 0].item(),
                    "loss_repeated": losses[index, 1].item(),
                    "delta_repeated": losses[index, 1].item() - clean_repeated,
                }
            )
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per condition: mean and standard deviation of each loss over seeds, and in how many seeds
    ablating the top heads raised the repeated-half loss more than ablating random heads."""
    stats = table.groupby("condition", sort=False)[
        ["loss_first_half", "loss_repeated", "delta_repeated"]
    ].agg(["mean", "std"])
    stats.columns = [f"{column}_{stat}" for column, stat in stats.columns]
    deltas = table.pivot(index="seed", columns="condition", values="delta_repeated")
    wins = int((deltas["top"] > deltas["random"]).sum())
    return stats.assign(top_beats_random=f"{wins}/{len(deltas)}")
