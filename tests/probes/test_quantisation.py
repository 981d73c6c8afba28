"""What the README says of the registry weights: GGUF files quantised as its table says, and a
float32 copy that holds exactly the dequantised values (probes/models/gguf_cache.py)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest

from probes.models import REGISTRY
from probes.models.gguf_cache import converted_dir, default_cache_dir
from probes.models.weight_packages import locate_gguf, prepare

# GGUF tensor role -> Hugging Face parameter of layer N
HF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}  # fmt: skip
# role -> {quantisation: number of layers}, as the README's table states it
EXPECTED = {
    "smollm2-135m": {
        "token_embd": {"Q8_0": 1},
        **{role: {"Q4_1": 30} for role in HF_NAMES},
    },
    "gemma-3-270m": {
        "token_embd": {"Q8_0": 1},
        **{role: {"Q5_0": 18} for role in ("attn_q", "attn_k", "ffn_gate", "ffn_up")},
        "attn_output": {"Q4_K": 18},
        "ffn_down": {"Q4_K": 9, "Q6_K": 9},
        "attn_v": {"Q5_0": 9, "Q8_0": 9},
    },
}


def gguf_file(name: str) -> Path:
    """The registry model's GGUF file, its float32 copy made if missing (as `make setup` does)."""
    spec, cache = REGISTRY[name], default_cache_dir()
    prepare(name, install=False)
    assembled = cache / "gguf" / spec.source.filename  # where a split file was put together
    return assembled if spec.source.assemble and assembled.is_file() else locate_gguf(spec, cache)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_weights_are_quantised_as_stated_and_stored_exactly_dequantised(name):
    import gguf
    from safetensors import safe_open

    reader = gguf.GGUFReader(str(gguf_file(name)))
    found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    weights = converted_dir(default_cache_dir(), name) / "model.safetensors"
    with safe_open(str(weights), "np") as stored:
        for tensor in reader.tensors:
            kind = tensor.tensor_type.name
            if kind == "F32":  # norms: kept in float32 (Gemma's shifted by 1 on loading)
                continue
            match = re.fullmatch(r"(?:blk\.(\d+)\.)?(\w+)\.weight", tensor.name)
            assert match, tensor.name
            layer, role = match.groups()
            found[role][kind] += 1
            hf_name = (
                "model.embed_tokens.weight"
                if role == "token_embd"
                else f"model.layers.{layer}.{HF_NAMES[role]}.weight"
            )
            ours = stored.get_tensor(hf_name)
            assert ours.dtype == np.float32
            theirs = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(ours.shape)
            if role in ("attn_q", "attn_k") and name == "smollm2-135m":
                # llama.cpp permutes a Llama's q/k rows for its rotary layout; transformers undoes
                # it, so compare the rows as a set
                theirs = np.sort(theirs.view(np.uint32).view("V" + str(4 * theirs.shape[1])), 0)
                ours = np.sort(ours.view(np.uint32).view("V" + str(4 * ours.shape[1])), 0)
            assert np.array_equal(ours, theirs), f"{name}: {tensor.name} ({kind}) differs"
    assert {role: dict(counts) for role, counts in found.items()} == EXPECTED[name]
