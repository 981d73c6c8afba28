"""tiny-random-qwen2.5-vl: shaped like Qwen2.5-VL-3B, booted through the bridge with logits equal
to Hugging Face's for image prompts (3-D mRoPE positions included), and a saved directory loading
by path with its own preprocessor config."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from probes.inputs.images import image_kwargs
from probes.inputs.prompts import Prompt
from probes.models import ModelUnavailableError, load, loading
from probes.models.vision_qwen import TINY_QWEN, tiny_preprocessor_config, tiny_qwen

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "prompts" / "images"
WIDE = "a wide picture <image> of the thing , it is blue"


@pytest.fixture(scope="module")
def qwen():
    hf_model, tokenizer, vision = tiny_qwen(seed=3)
    return hf_model, loading.wrap(hf_model, tokenizer, TINY_QWEN, vision=vision)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "wide.png"
    image = Image.new("RGB", (300, 20), "white")
    image.paste((0, 0, 255), (250, 0, 300, 20))
    image.save(path)
    return path


def image_prompt_tokens(model, text, image):
    from probes.inputs.images import tokenize_image_prompt

    prompt = Prompt("p", text, image=Path(image))
    return list(tokenize_image_prompt(model, prompt, 256, "p").tokens)


def test_tiny_qwen_is_shaped_like_qwen2_5_vl_3b(qwen):
    hf_model, model = qwen
    config = hf_model.config
    assert model.provenance["architecture"] == "Qwen2_5_VLForConditionalGeneration"
    vision, text = config.vision_config, config.text_config
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert vision.fullatt_block_indexes == [1, 3] and vision.depth == 4
    assert vision.window_size == 56  # 2 × 2 merged tokens a window
    assert text.rope_parameters["mrope_section"] == [2, 3, 3]  # the 3B's 16 : 24 : 24
    assert config.tie_word_embeddings
    assert (model.info.n_layers, model.info.n_heads, model.info.n_kv_heads) == (2, 4, 2)
    assert model.info.d_head == 16 and model.vision.n_image_tokens is None


def test_the_image_becomes_its_grid_tokens_wrapped_in_vision_start_and_end(qwen, wide):
    _, model = qwen
    tokens = image_prompt_tokens(model, WIDE, wide)
    processing = model.vision.processing
    start = tokens.index(processing.start_token_id)
    assert tokens[: start + 1] == [*model.tokenize("a wide picture"), processing.start_token_id]
    image = [model.vision.image_token_id] * 11  # 308 × 28 pixels: 22 × 2 patches, 11 × 1 merged
    assert tokens[start + 1 : start + 13] == [*image, processing.end_token_id]
    assert tokens[start + 13 :] == model.tokenize(" of the thing , it is blue", False)


def test_bridge_logits_equal_hugging_face_for_an_image_prompt_with_mrope_positions(qwen, wide):
    hf_model, model = qwen
    tokens = torch.tensor([image_prompt_tokens(model, WIDE, wide)])
    inputs = image_kwargs(model, [str(wide)], tokens)
    positions, _ = hf_model.model.get_rope_index(
        tokens, inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    image = (tokens[0] == model.vision.image_token_id).nonzero().flatten()
    # 3-D positions: the image tokens share one temporal / height position and count across
    # in width, and the text after them resumes after the widest side (11), not after 11 tokens.
    assert positions[0, 0, image].unique().numel() == 1
    # BOS, "a wide picture", <|vision_start|> take 0-4
    assert positions[2, 0, image].tolist() == list(range(5, 16))
    assert positions[:, 0, image[-1] + 1].tolist() == [16, 16, 16]  # <|vision_end|>
    with torch.inference_mode():
        reference = hf_model(input_ids=tokens, **inputs).logits
        torch.testing.assert_close(model.bridge(tokens, **inputs), reference)
        flat = hf_model(
            input_ids=tokens,
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
        ).logits  # without mm_token_type_ids the model falls back to 1-D positions
    assert (flat[0, image[-1] + 1 :] - reference[0, image[-1] + 1 :]).abs().max() > 1e-4


def test_a_row_without_its_image_reads_as_the_text_alone_in_a_batch_with_images(qwen, wide):
    """Divergence's "without the image" row shares batches with image rows: its positions must
    be the text alone's (0, 1, 2, ...), as if no image were in the batch."""
    hf_model, model = qwen
    with_image = image_prompt_tokens(model, WIDE, wide)
    processing = model.vision.processing
    wrapping = {processing.start_token_id, model.vision.image_token_id, processing.end_token_id}
    text = [t for t in with_image if t not in wrapping]
    width = len(with_image)
    batch = torch.full((2, width), model.pad_id)
    batch[0], batch[1, : len(text)] = torch.tensor(with_image), torch.tensor(text)
    mask = (torch.arange(width) < torch.tensor([[width], [len(text)]])).long()
    inputs = image_kwargs(model, [str(wide), None], batch)
    with torch.inference_mode():
        together = model.bridge(batch, attention_mask=mask, **inputs)
        alone = hf_model(input_ids=torch.tensor([text])).logits
        first = hf_model(input_ids=batch[:1], **image_kwargs(model, [str(wide)], batch[:1])).logits
    torch.testing.assert_close(together[1, : len(text)], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[0], first[0], rtol=1e-5, atol=1e-5)


def test_a_saved_qwen_directory_loads_by_path_with_its_own_preprocessing(tmp_path, wide):
    hf_model, tokenizer, vision = tiny_qwen(seed=4)
    directory = tmp_path / "qwen"
    hf_model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {**tiny_preprocessor_config(vision), "max_pixels": 28 * 28 * 6, "resample": 2}
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    model = load(str(directory))
    assert model.provenance["architecture"] == "Qwen2_5_VLForConditionalGeneration"
    assert model.vision.processing.max_pixels == 28 * 28 * 6
    assert model.vision.processing.resample == "bilinear"
    tokens = torch.tensor([image_prompt_tokens(model, WIDE, wide)])
    assert (tokens == model.vision.image_token_id).sum() == 9  # 252 × 28 pixels now
    inputs = image_kwargs(model, [str(wide)], tokens)
    with torch.inference_mode():
        torch.testing.assert_close(
            model.bridge(tokens, **inputs), hf_model(input_ids=tokens, **inputs).logits
        )


def test_tiny_qwen_names_take_a_seed():
    assert loading.tiny_seed("tiny-random-qwen2.5-vl-7", TINY_QWEN) == 7
    with pytest.raises(ModelUnavailableError, match=r"tiny-random-qwen2\.5-vl\[-SEED\]"):
        load("tiny-random-qwen2.5-vl-x")
    first, second = (tiny_qwen(seed)[0].lm_head.weight for seed in (1, 2))
    assert not torch.equal(first, second)
    assert torch.equal(tiny_qwen(1)[0].lm_head.weight, first)


def test_attention_hooks_act_inside_qwens_native_attention_once_per_pass(qwen, wide):
    """The adapter keeps HF's attention (mRoPE); headlab fires hook_attn_scores (pre-softmax,
    masked) and hook_pattern inside it, once each, and an edit there changes the output."""
    from probes import bridge
    from probes.core import hook_names
    from tests import planting

    hf_model, model = qwen
    tokens = torch.tensor([image_prompt_tokens(model, WIDE, wide)])
    inputs = image_kwargs(model, [str(wide)], tokens)
    seen: dict[str, list[torch.Tensor]] = {"attn_scores": [], "pattern": []}

    def keep(kind):
        return lambda tensor, hook: seen[kind].append(tensor.detach().clone())

    hooks = [(hook_names.attn(1, kind), keep(kind)) for kind in seen]

    def first(pattern, hook):  # head 0 all on position 0, as planting.bos_head does
        edited = pattern.clone()
        edited[:, 0] = 0.0
        edited[:, 0, :, 0] = 1.0
        return edited

    with torch.inference_mode():
        plain = bridge.forward(model, tokens, hooks, **inputs)
        reference = hf_model(input_ids=tokens, **inputs).logits
        planted = bridge.forward(model, tokens, [planting.bos_head(1, 0)], **inputs)
        on_first = bridge.forward(model, tokens, [(hook_names.attn(1, "pattern"), first)], **inputs)
    assert len(seen["attn_scores"]) == len(seen["pattern"]) == 1
    scores, pattern = seen["attn_scores"][0], seen["pattern"][0]
    torch.testing.assert_close(scores.softmax(-1), pattern)
    assert scores.min() < -1e30  # the causal mask is in the scores, as in the bridge's attention
    torch.testing.assert_close(plain, reference)
    assert (planted - plain).abs().max() > 1e-4  # the planted head's edit reaches the logits
    torch.testing.assert_close(on_first, planted)  # a pattern edit too, and it is the same one


def test_text_prompts_on_qwen_give_equal_sinks_on_both_engine_paths(qwen):
    import headlab as hl

    _, model = qwen
    texts = ["the cat went to the park and the dog", "mary gave the ball to john"]
    fast, bridged = (
        hl.scan(model, texts, probes=["sink"], path=path).set_index(["metric", "layer", "head"])
        for path in ("fast", "bridge")
    )
    alpha = ("alpha", slice(None), slice(None))
    assert (fast.loc[alpha].value - bridged.loc[alpha].value).abs().max() < 1e-5


def test_cached_decoding_positions_follow_each_prefill_with_or_without_an_image(qwen):
    """HF's Qwen2.5-VL keeps the last image prefill's mRoPE offset (`rope_deltas`) on the model
    for the decoding steps after it; a text prefill after an image one must not inherit it.
    The 2 × 2 merged grid of a square image moves the text after it back by 2 (a 1-row image,
    like the wide one, moves it by 0 and would not tell)."""
    from probes import bridge

    hf_model, model = qwen
    square = IMAGES / "red_square.png"
    with_image = image_prompt_tokens(model, WIDE, square)
    processing = model.vision.processing
    wrapping = {processing.start_token_id, model.vision.image_token_id, processing.end_token_id}
    text = [t for t in with_image if t not in wrapping]
    for tokens, image in ((with_image, str(square)), (text, None), (with_image, str(square))):
        ids = torch.tensor([tokens])
        inputs = image_kwargs(model, [image], ids)
        prefix = {k: v[:, :-1] if k == "mm_token_type_ids" else v for k, v in inputs.items()}
        with torch.inference_mode():
            _, cache = bridge.forward(model, ids[:, :-1], return_type="logits_and_cache", **prefix)
            step, _ = bridge.forward(
                model, ids[:, -1:], return_type="logits_and_cache", past_key_values=cache
            )
            whole = hf_model(input_ids=ids, **inputs).logits
        torch.testing.assert_close(step[0, -1], whole[0, -1], rtol=1e-5, atol=1e-5)


def test_images_of_different_sizes_in_one_batch_each_read_as_alone(qwen, wide):
    """Dynamic resolution: each row's patches and grid go to the model in row order."""
    hf_model, model = qwen
    files = [str(IMAGES / "red_square.png"), str(wide)]
    rows = [image_prompt_tokens(model, WIDE, image) for image in files]
    lengths = torch.tensor([[len(row)] for row in rows])
    width = int(lengths.max())
    batch = torch.full((2, width), model.pad_id)
    for number, row in enumerate(rows):
        batch[number, : len(row)] = torch.tensor(row)
    mask = (torch.arange(width) < lengths).long()
    with torch.inference_mode():
        together = model.bridge(batch, attention_mask=mask, **image_kwargs(model, files, batch))
        for number, (row, image) in enumerate(zip(rows, files, strict=True)):
            ids = torch.tensor([row])
            alone = hf_model(input_ids=ids, **image_kwargs(model, [image], ids)).logits
            torch.testing.assert_close(together[number, : len(row)], alone[0], rtol=1e-5, atol=1e-5)
    assert len(rows[0]) != len(rows[1])
