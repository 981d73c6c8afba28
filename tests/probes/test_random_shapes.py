"""Random-weight models shaped like Llama-3-8B: the full shape checked on the meta device (no
memory), the small same-ratio variant built and scanned here."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import LlamaForCausalLM

from probes import engine
from probes.families import sink as sinks
from probes.inputs.prompts import stdlib_docs_suite
from probes.models import check_name, load
from probes.models.random_shapes import SHAPES, build, llama_config, model_info
from probes.models.tiny import word_tokenizer


def test_the_8b_shape_has_llama_3_8b_parameters_and_config():
    config = llama_config(SHAPES["random-llama-3-8b"], word_tokenizer())
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        4096,
        32,
        32,
    )
    assert (config.num_key_value_heads, config.vocab_size, config.intermediate_size) == (
        8,
        128256,
        14336,
    )
    assert config.max_position_embeddings == 131072
    assert config.rope_parameters["rope_theta"] == 500000.0
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248  # Llama-3-8B's count
    check_name("random-llama-3-8b")  # a known name, told without building it


def test_the_mini_keeps_the_ratios():
    big, mini = SHAPES["random-llama-3-8b"], SHAPES["random-llama-3-8b-mini"]
    assert big.n_heads / big.n_kv_heads == mini.n_heads / mini.n_kv_heads == 4
    assert big.d_mlp / big.d_model == mini.d_mlp / mini.d_model == 3.5
    assert (big.rope_theta, big.n_ctx) == (mini.rope_theta, mini.n_ctx)


def test_built_weights_are_seeded_random_and_rotary_frequencies_are_recomputed():
    model, tokenizer = build("random-llama-3-8b-mini", "cpu", torch.bfloat16, seed=0)
    again, _ = build("random-llama-3-8b-mini", "cpu", torch.bfloat16, seed=0)
    other, _ = build("random-llama-3-8b-mini", "cpu", torch.bfloat16, seed=1)
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert weight.dtype == torch.bfloat16 and torch.isfinite(weight).all()
    assert 0.015 < weight.float().std().item() < 0.025
    assert torch.equal(weight, again.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(weight, other.model.layers[0].self_attn.q_proj.weight)
    assert (model.model.norm.weight == 1).all()
    reference = LlamaForCausalLM(llama_config(SHAPES["random-llama-3-8b-mini"], tokenizer))
    inv_freq = model.model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32
    torch.testing.assert_close(inv_freq, reference.model.rotary_emb.inv_freq)


def test_the_mini_loads_and_its_fast_path_equals_the_bridge_path():
    model = load("random-llama-3-8b-mini")
    assert model.info == model_info("random-llama-3-8b-mini")
    assert model.provenance["source"] == "random-shape"
    suite = stdlib_docs_suite(2, 40)

    def scan(path: str) -> pd.DataFrame:
        probe = sinks.SinkProbe(model.info, sinks.SinkParams(n_positions=4))
        return engine.run(model, [probe], suite, progress=False, path=path)

    pd.testing.assert_frame_equal(scan("fast"), scan("bridge"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["random-llama-3-8b-mini"])
def test_a_random_shape_follows_the_dtype_it_is_loaded_in(name):
    model = load(name, dtype="bfloat16")
    assert next(model.bridge.parameters()).dtype == torch.bfloat16
    assert model.provenance["dtype"] == "bfloat16"
