"""Head divergence for vision-language models: the segment is the image (the VHD paper's case).

Each prompt's text holds one image placeholder; "with" expands it to the model's image tokens and
passes `pixel_values`, "without" drops both. The two variants run one at a time through the
same `DivergenceProbe` hooks (language-model `blocks.L.attn.hook_z`), so the rows have the text
path's schema. `pixel_values` are built here with PIL and numpy (CLIP's resize and normalise):
transformers' image processors need torchvision, which does not import beside this CPU torch.
Tested on random-weight LLaVA built from a config; a real LLaVA checkpoint runs the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from probes import bridge
from probes.core.types import Batch
from probes.families.divergence import DivergenceProbe
from probes.inputs.images import ImageInputs, ImagePrompt, image_layout, pixel_values
from probes.models import LoadedModel


def run_images(
    model: LoadedModel, probe: DivergenceProbe, prompts: Sequence[ImagePrompt], inputs: ImageInputs
) -> pd.DataFrame:
    """VHD and T-VHD of every language-model head, image present vs absent, as tidy rows."""
    for prompt in prompts:
        layout = image_layout(model, prompt, inputs, probe.params.answer_tokens)
        for variant, tokens in (("with", layout.with_segment), ("without", layout.without_segment)):
            engine_id = f"{prompt.id}#{variant}"
            probe.variants[engine_id] = (layout, variant)
            ids = torch.tensor([tokens], device=model.device)
            batch = Batch(ids, torch.tensor([len(tokens)], device=model.device), (engine_id,))
            extra: dict[str, Any] = {}  # forward's keyword arguments for the HF model
            if variant == "with":
                extra["pixel_values"] = pixel_values(prompt.image, inputs).to(model.device)
            bridge.forward(model, ids, probe.hooks(batch), return_type=None, **extra)
    return pd.DataFrame(probe.rows()).assign(probe=probe.name)
