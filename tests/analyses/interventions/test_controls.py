"""The one random-control rule: layer-matched, outside the top set, nearest layers when short."""

from collections import Counter

import pytest

from analyses.interventions.controls import ControlError, layer_matched_random_heads


def test_random_heads_match_the_layers_and_avoid_the_top_set():
    top = [(0, 1), (3, 2), (3, 5), (7, 0)]
    draws = {layer_matched_random_heads(top, 10, 9, seed) for seed in range(5)}
    assert len(draws) > 1  # seeds differ
    for heads in draws:
        assert Counter(layer for layer, _ in heads) == Counter(layer for layer, _ in top)
        assert not set(heads) & set(top) and len(set(heads)) == len(top)
    assert layer_matched_random_heads(top, 10, 9, 3) == layer_matched_random_heads(top, 10, 9, 3)


def test_excluded_heads_are_never_drawn():
    top, exclude = [(2, 0)], [(2, h) for h in range(1, 8)]
    assert layer_matched_random_heads(top, 4, 9, seed=0, exclude=exclude) == ((2, 8),)


def test_a_full_layer_borrows_from_the_nearest_layers():
    top = [(1, 0), (1, 1), (1, 2)]  # all of layer 1's three heads
    heads = layer_matched_random_heads(top, 3, 3, seed=0)
    assert len(heads) == 3 and {layer for layer, _ in heads} <= {0, 2}
    top = [(0, 0), (0, 1)]  # layer 0 full: layer 1 is nearer than layer 3
    assert {layer for layer, _ in layer_matched_random_heads(top, 4, 2, seed=1)} == {1}


def test_too_few_heads_outside_the_top_set_is_a_clear_error():
    with pytest.raises(ControlError, match="use a smaller k"):
        layer_matched_random_heads([(0, 0), (0, 1), (1, 0)], 2, 2, seed=0)
    with pytest.raises(ControlError, match="outside the model's 2 layers"):
        layer_matched_random_heads([(5, 0)], 2, 2, seed=0)
