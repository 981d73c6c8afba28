import numpy as np
import pytest
import torch

from probes.core.errors import ConfigError
from probes.core.heads import Head, heads_of


def test_a_head_reads_from_a_pair_or_a_name_and_prints_as_a_name():
    assert Head.of((18, 8)) == Head.of([18, 8]) == Head.of("L18H8") == Head.of("l18h8") == (18, 8)
    assert str(Head(18, 8)) == "L18H8"
    assert Head.of(Head(3, 1)) == Head(3, 1)
    assert Head.of((np.int64(2), torch.tensor(5))) == (2, 5)  # integers of numpy and torch


def test_one_head_alone_is_one_head_and_a_list_is_several():
    assert heads_of((18, 8)) == heads_of([18, 8]) == heads_of("L18H8") == (Head(18, 8),)
    assert heads_of([(18, 8), (3, 1)]) == heads_of(["L18H8", "L3H1"]) == ((18, 8), (3, 1))
    assert heads_of(np.array([[1, 2], [3, 4]])) == ((1, 2), (3, 4))
    assert heads_of(head for head in ["L0H1"]) == ((0, 1),)  # a generator is read once
    assert heads_of([]) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (18, "give one head or a list of heads.*got 18"),
        ("L18", "a head name is like 'L18H8', got 'L18'"),
        ("18.8", "a head name is like 'L18H8', got '18.8'"),
        ([18], "a head is \\(layer, head\\).*got 18"),
        ([[18, 8, 1]], "got \\[18, 8, 1\\]"),
        ([(-1, 2)], "got \\(-1, 2\\)"),
        ([True, 1], "got True"),
        ([(1.5, 2)], "got \\(1.5, 2\\)"),
        ([(1, 2), "L1H2"], "L1H2 appears more than once"),
    ],
)
def test_anything_else_is_a_config_error_naming_the_input(value, message):
    with pytest.raises(ConfigError, match=f"^ablate: .*{message}"):
        heads_of(value, "ablate")
