"""Test-only transcription of VHD and T-VHD as arXiv 2412.13949 defines them (no code of the
authors is public in the stored material; this follows the paper's equations, not headlab's).

    VHD_{l,i}(y_t) = ‖A_{l,i}(y_t | y_<t, x_V, x_T) − A_{l,i}(y_t | y_<t, x_T)‖₂
    T-VHD(y_t)     = (1/k) Σ_{top-k (l,i)} VHD_{l,i}(y_t)

The answer y is what Hugging Face `generate(do_sample=False)` returns with the image; A_{l,i}
is head i's output (`hook_z`) at the step that generates y_t (the position of y_{t-1}), read
from one unbatched full-sequence pass per branch with every layer's hook_z cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probes import bridge
from probes.core import hook_names as hooks


@dataclass
class Reference:
    answer: list[int]  # generated token ids
    vhd: torch.Tensor  # [layer, head, t]


def hf_answer(model, tokens, max_new_tokens: int, **inputs) -> list[int]:
    ids = torch.tensor([list(tokens)])
    with torch.inference_mode():
        out = bridge.hf_model(model).generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=max_new_tokens, **inputs,
        )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


def head_outputs(model, tokens, **inputs) -> torch.Tensor:
    """Every layer's hook_z of one sequence: [layer, pos, head, d_head]."""
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(
            torch.tensor([list(tokens)]), names_filter=lambda n: n.endswith("hook_z"), **inputs
        )
    return torch.stack([cache[hooks.attn(layer, "z")][0] for layer in range(model.info.n_layers)])


def reference_vhd(model, with_image, without_image, pixel_values, max_new_tokens) -> Reference:
    """VHD_{l,i}(y_t) for every generated token of one image prompt."""
    answer = hf_answer(model, with_image, max_new_tokens, pixel_values=pixel_values)
    fed = answer[:-1]  # y_t is produced at the position of y_{t-1}; the last token is not fed
    z_with = head_outputs(model, list(with_image) + fed, pixel_values=pixel_values)
    z_without = head_outputs(model, list(without_image) + fed)
    steps_with = range(len(with_image) - 1, len(with_image) - 1 + len(answer))
    steps_without = range(len(without_image) - 1, len(without_image) - 1 + len(answer))
    vhd = (z_with[:, list(steps_with)] - z_without[:, list(steps_without)]).norm(dim=-1)
    return Reference(answer, vhd.permute(0, 2, 1))  # [layer, head, t]


def t_vhd(vhd: torch.Tensor, k: int) -> torch.Tensor:
    """T-VHD per token of a [layer, head, t] VHD tensor."""
    flat = vhd.flatten(0, 1)
    return flat.sort(dim=0, descending=True).values[:k].mean(0)
