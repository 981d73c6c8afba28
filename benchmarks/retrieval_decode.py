"""Retrieval probe, per-sample time: headlab's fused decode vs a plain greedy decode and the
authors' way, on one needle-in-a-haystack sample per length.

    .venv/bin/python benchmarks/retrieval_decode.py --model smollm2-135m --lengths 1024,2048,4096

  fused    headlab's retrieval decode: SDPA prefill (exact rows over the window on a sliding
           layer), each step's last attention row per head rebuilt from q and the KV cache,
           only its arg-max kept (`path="fused"`)
  bridge   headlab's bridge path (eager TransformerLens prefill and steps, hooks)
  generate Hugging Face `generate`, greedy, SDPA, at most as many new tokens: the floor,
           no attention read at all
  authors  nightdessert/Retrieval_Head's loop (test-only transcription in tests/probes/
           reference_retrieval.py): eager model, decode with output_attentions=True, their
           per-head Python scoring loop

`--methods` picks what runs beside the fused decode (default generate,authors; '' for the fused
decode alone, where the others cannot fit: Gemma at 32k). Each runs the same sample once, after
one short warm-up; times are wall seconds of the
whole sample (prefill and decode). The script checks that every method generated the same
tokens (else where, with the top-2 logit margin there) and that fused scores equal the authors',
on headlab's answer span where their span search misses it. On a shared machine give the load
beside the figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from probes import decoding as decode
from probes.families.retrieval import run_sample
from probes.inputs import niah
from probes.models import gguf_cache, load
from tests.probes.reference_retrieval import authors_sample_scores, find_needle_idx


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


Greedy = tuple[list[int], list[torch.Tensor]]


def hf_greedy(hf_model: torch.nn.Module, tokens: Sequence[int], n_new: int, pad: int) -> Greedy:
    """At most `n_new` greedy tokens of `generate` after `tokens`, and each step's logits. No
    `min_new_tokens`: it bans EOS, so where the fused decode ended on EOS it forced the runner-up
    (SmolLM2 at 512 and 2048 tokens: '\\n' for '<|im_end|>', 1.95 and 1.0 logits behind)."""
    ids = torch.tensor([list(tokens)])
    with torch.inference_mode():
        out = hf_model.generate(  # type: ignore[operator]
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n_new,
            do_sample=False,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, ids.shape[1] :].tolist(), [step[0] for step in out.logits]


def divergence(tokens: list[int], ours: list[int], logits: list[torch.Tensor] | None) -> str:
    """Where `tokens` first differ from the fused decode's, with that step's top-2 logit margin
    when the logits are known: a near-tie can flip between kernels, a wide margin cannot."""
    pairs = enumerate(zip(tokens, ours, strict=False))
    first = next((i for i, (a, b) in pairs if a != b), min(len(tokens), len(ours)))
    where = f"first at new token {first} ({len(tokens)} vs {len(ours)} tokens)"
    if logits is None or first >= len(logits):
        return where
    top = logits[first].float().topk(2).values
    return f"{where}, top-2 logit margin there {float(top[0] - top[1]):.3g}"


def span_miss(tokenizer: PreTrainedTokenizerBase, sample: niah.NiahSample, found: object) -> str:
    """One line on why the authors' span search missed: their needle ids, tokenised alone,
    share too few ids with the prompt's (byte-level BPE: a first word without its space)."""
    alone = set(tokenizer(sample.needle.answer, add_special_tokens=False)["input_ids"])
    start, end = sample.answer_span
    shared = len(alone & set(sample.tokens[start:end]))
    return (
        f"authors' span search found {found}, not {sample.answer_span}: the answer tokenised "
        f"alone shares {shared}/{len(alone)} of its ids with the prompt's span (they need > 0.9)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument(
        "--methods",
        default="generate,authors",
        help="what to time beside the fused decode (comma-separated: generate, authors, bridge; "
        "'' for the fused decode alone, e.g. where the others cannot fit in memory)",
    )
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    others = [name for name in args.methods.split(",") if name]
    unknown = set(others) - {"generate", "authors", "bridge"}
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from generate,authors,bridge")

    model = load(args.model)
    room = model.info.n_ctx - args.max_new_tokens  # the answer must fit after the prompt
    if max(lengths) > room:
        parser.error(f"--lengths: {max(lengths)} + {args.max_new_tokens} new tokens exceed the "
                     f"{model.info.n_ctx}-token context of {args.model}")  # fmt: skip
    source = gguf_cache.converted_dir(gguf_cache.default_cache_dir(), args.model)

    def hf(attention: str) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(source, attn_implementation=attention).eval()

    tokenizer = model.tokenizer
    eos = tokenizer.eos_token_id
    stop = decode.StopRule(tokenizer)
    builder = niah.NiahBuilder(model, niah.load_haystack(niah.STDLIB_DOCS))
    needle = niah.load_needles(niah.DEFAULT_NEEDLES)[0]
    try:  # every sample before any timing: a length the haystack cannot fill ends in one line
        samples = [builder.sample(needle, length, args.depth) for length in lengths]
    except niah.NiahError as error:
        parser.error(f"--lengths: {error}")
    sdpa = hf("sdpa") if "generate" in others else None
    eager = hf("eager") if "authors" in others else None
    print(f"{args.model}, {torch.get_num_threads()} threads, depth {args.depth}%, one sample each")

    def their_span(sample: niah.NiahSample) -> tuple[int, int]:
        """Their search's span where it finds the needle; else, said so once, headlab's, so
        that the scores still compare (with a miss every one of theirs would be 0)."""
        found = find_needle_idx(tokenizer, torch.tensor(sample.tokens), needle.answer)
        if found != sample.answer_span:
            print(f"  {span_miss(tokenizer, sample, found)}; scores compared on headlab's span")
            return sample.answer_span
        return found

    def methods(sample: niah.NiahSample, n_new: int) -> dict[str, Callable[[], object]]:
        """The fused decode first: the others take its number of new tokens."""
        chosen: dict[str, Callable[[], object]] = {}
        if sdpa is not None:
            chosen["generate"] = lambda: hf_greedy(
                sdpa, sample.tokens, n_new, tokenizer.pad_token_id or eos
            )
        if eager is not None:
            chosen["authors"] = lambda: authors_sample_scores(
                eager, tokenizer, list(sample.tokens), needle.answer, stop, args.max_new_tokens,
                span=their_span(sample),
            )  # fmt: skip
        if "bridge" in others:
            chosen["bridge"] = lambda: run_sample(
                model, sample, max_new_tokens=args.max_new_tokens, stop=stop, path="bridge"
            )
        return chosen

    def fused(sample: niah.NiahSample) -> object:
        return run_sample(
            model, sample, max_new_tokens=args.max_new_tokens, stop=stop, path="fused"
        )

    warm = builder.sample(needle, 256, args.depth)
    print(f"warm-up fused: {timed(lambda: fused(warm))[0]:.2f} s")
    for name, function in methods(warm, 4).items():
        print(f"warm-up {name}: {timed(function)[0]:.2f} s")

    columns = ["fused", *others]
    print(" ".join([f"{'tokens':>7}", *(f"{name + '_s':>10}" for name in columns), f"{'new':>4}"])
          + "".join(f" {ratio_name(name):>14}" for name in others))  # fmt: skip
    for sample in samples:
        seconds, result = timed(lambda s=sample: fused(s))
        ours = list(result.generated)  # type: ignore[attr-defined]
        times, results = {"fused": seconds}, {}
        for name, function in methods(sample, len(ours)).items():
            times[name], results[name] = timed(function)
        compare(ours, result, results)
        row = " ".join([f"{len(sample.tokens):>7}", *(f"{times[n]:>10.2f}" for n in columns)])
        ratios = "".join(f" {ratio(name, times):>14.2f}" for name in others)
        print(f"{row} {len(ours):>4}{ratios}")


def ratio_name(name: str) -> str:
    """The target is the fused decode against a plain greedy decode; the rest against fused."""
    return "fused/generate" if name == "generate" else f"{name}/fused"


def ratio(name: str, times: dict[str, float]) -> float:
    return times["fused"] / times[name] if name == "generate" else times[name] / times["fused"]


def compare(ours: list[int], fused: Any, results: dict[str, Any]) -> None:
    """Say where another method decoded differently; the authors' scores must equal ours."""
    if "generate" in results:
        tokens, logits = results["generate"]
        if tokens != ours:
            print(
                f"  (generate decoded differently from fused: {divergence(tokens, ours, logits)})"
            )
    if "authors" in results:
        theirs, their_output, (start, end) = results["authors"]
        if their_output != ours:
            where = divergence(their_output, ours, None)
            print(f"  (authors decoded differently from fused: {where})")
        torch.testing.assert_close(fused.hits / (end - start), theirs, rtol=0, atol=1e-6)


if __name__ == "__main__":
    main()
