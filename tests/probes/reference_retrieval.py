"""Test-only transcription of the retrieval-head authors' scoring loop.

nightdessert/Retrieval_Head @ 3ac171a6, retrieval_head_detection.py: `find_needle_idx`,
`evaluate_and_log` (prefill of prompt[:-1]), `decode` and `retrieval_calculate`, run on a plain
Hugging Face model with `output_attentions=True`, no TransformerBridge and no hooks. Two things
are parameters rather than constants: the stop test (theirs is the token '<0x0A>' or id 144,
tokenizer-specific) and the decode length (theirs is 50); and a needle span may be given in place
of their search's, which misses on byte-level BPE (`probes.inputs.niah`). Kept as in the
original: topk(1), the `break` after the first hit, no de-duplication, scoring before the stop
check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def find_needle_idx(tokenizer, prompt_ids: torch.Tensor, needle: str) -> tuple[int, int]:
    needle_ids = tokenizer(needle, add_special_tokens=False)["input_ids"]
    span_len = len(needle_ids)
    for i in range(len(prompt_ids)):
        token_span = prompt_ids[i : i + span_len]
        span_ids = set(token_span.tolist())
        overlap = float(len(span_ids.intersection(set(needle_ids)))) / len(set(needle_ids))
        if overlap > 0.9:
            return i, i + span_len
    return -1, -1


def authors_sample_scores(
    hf_model,
    tokenizer,
    prompt: list[int],
    real_needle: str,
    stop: Callable[[int], bool],
    decode_len: int = 50,
    span: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, list[int], tuple[int, int]]:
    """Per-(layer, head) retrieval score of one sample, before ROUGE gating; the greedy output;
    and the needle span (`span`, else `find_needle_idx`'s). Mirrors `evaluate_and_log` +
    `decode` + `retrieval_calculate`."""
    config = hf_model.config
    layer_num, head_num = config.num_hidden_layers, config.num_attention_heads
    input_ids = torch.tensor([prompt])
    prompt_ids = input_ids[0, :]
    found = find_needle_idx(tokenizer, prompt_ids, real_needle) if span is None else span
    needle_start, needle_end = found
    retrieval_score = [[[0, ""] for _ in range(head_num)] for _ in range(layer_num)]

    def retrieval_calculate(attention_maxtrix, inp, step_token, topk=1):
        for layer_idx in range(layer_num):
            for head_idx in range(head_num):
                values, idx = attention_maxtrix[layer_idx][0][head_idx][-1].topk(topk)
                for _v, i in zip(values, idx, strict=True):
                    if needle_start <= i < needle_end and inp.item() == prompt_ids[i].item():
                        retrieval_score[layer_idx][head_idx][0] += 1 / (needle_end - needle_start)
                        retrieval_score[layer_idx][head_idx][1] += step_token
                        break

    output = []
    with torch.no_grad():
        q_outputs = hf_model(input_ids=input_ids[:, :-1], use_cache=True, return_dict=True)
        past_kv = q_outputs.past_key_values
        inp = input_ids[:, -1]
        for _step_i in range(decode_len):
            inp = inp.view(1, 1)
            outputs = hf_model(
                input_ids=inp, past_key_values=past_kv, use_cache=True, output_attentions=True
            )
            past_kv = outputs.past_key_values
            inp = outputs.logits[0, -1].argmax()
            step_token = tokenizer.convert_ids_to_tokens(inp.item())
            output.append(inp.item())
            retrieval_calculate(outputs.attentions, inp, step_token)
            if stop(inp.item()):
                break
    scores = torch.tensor([[float(head[0]) for head in layer] for layer in retrieval_score])
    return scores, output, (needle_start, needle_end)
