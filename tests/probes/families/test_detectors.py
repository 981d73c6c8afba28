import itertools

import pandas as pd
import pytest
import torch
from transformer_lens import head_detector as tl

from probes import engine
from probes.families import detectors
from probes.inputs import synthetic
from probes.inputs.prompts import Prompt, PromptSuite
from tests import planting
from tests.probes.families import dense_detectors as dense
from tests.tensors import random_causal_patterns

HALF = 24  # half length of the repeated random sequences in the tiny-model tests


def run(model, params=None, plants=(), suite=None) -> pd.DataFrame:
    probe = detectors.DetectorProbe(
        model.info, params or detectors.DetectorParams(n_sequences=3, half_len=HALF)
    )
    suite = suite or PromptSuite("unused", (Prompt("x", "the"),), "test")
    with planting.planted(model, plants):
        return engine.run(model, [probe], suite, batch_size=2, progress=False)


def value(rows: pd.DataFrame, metric: str, layer: int, head: int) -> float:
    (result,) = rows[(rows.metric == metric) & (rows.layer == layer) & (rows["head"] == head)].value
    return result


# --- pure maths against TransformerLens' own functions ---------------------------------------


def test_detection_patterns_equal_transformer_lens_per_sequence_and_ignore_padding():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (2, 11), generator=generator)  # small vocabulary: many repeats
    lengths = torch.tensor([7, 11])
    ours = dense.detection_patterns(tokens, lengths)
    references = {
        "previous_token": tl.get_previous_token_head_detection_pattern,
        "duplicate_token": tl.get_duplicate_token_head_detection_pattern,
        "induction": tl.get_induction_head_detection_pattern,
    }
    for name, reference in references.items():
        for row, length in enumerate(lengths.tolist()):
            expected = reference(tokens[row : row + 1, :length]).bool()
            assert torch.equal(ours[name][row, :length, :length], expected), name
            assert not ours[name][row, length:].any() and not ours[name][row, :, length:].any()


@pytest.mark.parametrize(
    "exclude_bos,exclude_current", list(itertools.product([False, True], [False, True]))
)
def test_scores_equal_transformer_lens_similarity_score(exclude_bos, exclude_current):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 4, (2, 9), generator=generator)
    lengths = torch.tensor([6, 9])
    pattern = random_causal_patterns(2, 3, 9, 9, seed=2)
    pattern[0, :, 6:, :] = 0.25  # garbage in padding rows must not count
    for name, detection in dense.detection_patterns(tokens, lengths).items():
        ours = dense.detector_scores(pattern, detection, lengths, exclude_bos, exclude_current)
        for row, length in enumerate(lengths.tolist()):
            for head in range(3):
                expected = tl.compute_head_attention_similarity_score(
                    pattern[row, head, :length, :length].clone(),
                    detection[row, :length, :length].float(),
                    exclude_bos=exclude_bos,
                    exclude_current_token=exclude_current,
                    error_measure="mul",
                )
                assert ours[row, head].item() == pytest.approx(expected, abs=1e-6), name


def test_repeated_random_tokens_repeat_and_are_seeded():
    first = synthetic.repeated_random_tokens(range(10, 60), 3, 7, seed=5, bos=1)
    again = synthetic.repeated_random_tokens(range(10, 60), 3, 7, seed=5, bos=1)
    other = synthetic.repeated_random_tokens(range(10, 60), 3, 7, seed=6, bos=1)
    assert first == again and first != other
    for sequence in first:
        assert len(sequence) == 15 and sequence[0] == 1
        assert sequence[1:8] == sequence[8:] and all(10 <= t < 60 for t in sequence[1:])


def test_probe_equals_transformer_lens_detect_head_on_the_bridge(tiny_model):
    """The engine's batched, padded streaming scores equal TransformerLens' detect_head run on
    the same bridge one sequence at a time (its own tokenization, cache and score)."""
    params = detectors.DetectorParams(n_sequences=3, half_len=HALF, exclude_bos=True)
    rows = run(tiny_model, params)
    prompts = synthetic.repeated_random_prompts(tiny_model, 3, HALF, 0, "detectors")
    texts = [tiny_model.tokenizer.decode(list(p.tokens[1:])) for p in prompts]
    for prompt, text in zip(prompts, texts, strict=True):  # the reference reads the same ids
        assert tiny_model.bridge.to_tokens(text)[0].tolist() == list(prompt.tokens)
    for name, tl_name in [
        ("previous_token", "previous_token_head"),
        ("duplicate_token", "duplicate_token_head"),
        ("induction", "induction_head"),
    ]:
        expected = tl.detect_head(tiny_model.bridge, texts, tl_name, exclude_bos=True)
        for layer, head in itertools.product(range(2), range(4)):
            assert value(rows, name, layer, head) == pytest.approx(
                expected[layer, head].item(), abs=1e-5
            )


# --- planted heads ------------------------------------------------------------------------------


def induction_key(query: int) -> int:
    """[BOS, r, r]: the token after the previous occurrence, BOS in the first half."""
    return query - HALF + 1 if query > HALF else 0


def test_planted_induction_head_scores_its_closed_form_and_not_previous_token(tiny_model):
    plants = [planting.attend_to(1, 2, induction_key)]
    rows = run(tiny_model, plants=plants)
    total = 2 * HALF + 1
    assert value(rows, "induction", 1, 2) == pytest.approx(HALF / total, abs=1e-6)
    assert value(rows, "previous_token", 1, 2) == pytest.approx(1 / total, abs=1e-6)  # row 1 → BOS
    strict = run(tiny_model, detectors.DetectorParams(3, HALF, exclude_bos=True), plants)
    assert value(strict, "induction", 1, 2) == pytest.approx(1.0, abs=1e-6)
    assert value(strict, "previous_token", 1, 2) < 0.05
    others = strict[(strict.metric == "induction") & ~((strict.layer == 1) & (strict["head"] == 2))]
    assert others.value.max() < 0.2  # random heads are not induction heads


def test_planted_previous_token_head_is_not_an_induction_head(tiny_model):
    rows = run(tiny_model, plants=[planting.previous_token_head(0, 1)])
    total = 2 * HALF + 1
    assert value(rows, "previous_token", 0, 1) == pytest.approx((total - 1) / total, abs=1e-6)
    assert value(rows, "induction", 0, 1) < 0.05


def test_planted_duplicate_head_scores_duplicate_not_induction(tiny_model):
    plants = [planting.attend_to(0, 3, lambda q: q - HALF if q > HALF else 0)]
    rows = run(tiny_model, plants=plants)
    assert value(rows, "duplicate_token", 0, 3) == pytest.approx(HALF / (2 * HALF + 1), abs=1e-6)
    assert value(rows, "induction", 0, 3) < 0.05


def test_sequences_longer_than_the_context_are_refused_with_the_probe_and_model(tiny_model):
    with pytest.raises(ValueError, match=r"detectors.*half_len=200.*tiny-random"):
        run(tiny_model, detectors.DetectorParams(n_sequences=1, half_len=200))


def test_rows_are_deterministic_complete_and_finite(tiny_model):
    first, second = run(tiny_model), run(tiny_model)
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 3 * 2 * 4 and first.value.between(0, 1).all()


# --- attention statistics -----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_has_induction_heads_that_a_planted_free_random_model_lacks(smollm2, tiny_model):
    params = detectors.DetectorParams(n_sequences=4, half_len=32, exclude_bos=True)
    real = run(smollm2, params)
    induction = real[real.metric == "induction"].value
    assert len(induction) == 270
    # Olsson et al.: pretrained LMs grow induction heads; a random model has none.
    assert induction.max() > 0.5
    assert (
        run(tiny_model, detectors.DetectorParams(4, 32, exclude_bos=True))
        .query("metric == 'induction'")
        .value.max()
        < 0.2
    )
