"""Visual sink tokens and image-centric heads (probes.core.visual_sinks) against the test-only
transcription of the authors' code (tests/probes/reference_var.py), on random and planted inputs."""

import pytest
import torch

from probes.core import visual_sinks as vs
from tests.probes import reference_var as ref

D = 1024  # RMS-normed entries are at most √D: τ = 20 needs D > 400
IMAGE = (2, 10)  # image tokens at positions 2..9 of 14


def hidden(seed=0, n=14):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def planted_hidden():
    """BOS with massive values in dims 5 and 40; image token 4 massive in dim 40, token 7 massive
    in dim 11 only (not a sink dimension)."""
    h = hidden(1)
    h[0, 5], h[0, 40] = 300.0, -260.0
    h[4, 40] = 200.0
    h[7, 11] = 200.0
    return h


def mask(positions, n=14):
    out = torch.zeros(n, dtype=torch.bool)
    out[list(positions)] = True
    return out


def test_sink_dimensions_are_the_bos_massive_ones_largest_first():
    assert vs.sink_dimensions(planted_hidden()[0]).tolist() == [5, 40]
    assert vs.sink_dimensions(hidden(2)[0]).tolist() == []  # no massive value: no dimension


def test_massive_tokens_match_the_authors_dim_prospector_on_planted_input():
    h = planted_hidden()
    dims = vs.sink_dimensions(h[0])
    found = vs.massive_tokens(h, dims).nonzero().flatten()
    assert found.tolist() == [0, 4]  # BOS and the image token; token 7's dim is not a sink dim
    assert torch.equal(found, ref.dim_prospector(h[None], dims, 20))


@pytest.mark.parametrize("seed", range(5))
def test_massive_tokens_match_the_authors_on_random_input(seed):
    h = hidden(seed) * torch.rand(14, 1, generator=torch.Generator().manual_seed(seed)) * 3
    dims = torch.tensor([3, 17])
    for tau in (1.5, 2.0, 2.5):
        ours = vs.massive_tokens(h, dims, tau).nonzero().flatten()
        assert torch.equal(ours, ref.dim_prospector(h[None], dims, tau))
    assert not vs.massive_tokens(h, torch.tensor([], dtype=torch.long)).any()


def random_pattern(seed, heads=4, q=14, k=14):
    scores = torch.randn(1, heads, q, k, generator=torch.Generator().manual_seed(seed)) * 2
    causal = torch.ones(q, k, dtype=torch.bool).tril(k - q)
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@pytest.mark.parametrize("seed", range(5))
def test_image_centric_rows_match_the_authors_head_fork(seed):
    pattern = random_pattern(seed)
    sinks = torch.tensor([0, 3, 6])
    image = mask(range(*IMAGE))
    for rho, summ in ((0.5, 0.2), (0.3, 0.5), (0.9, 0.0)):
        ours = vs.image_centric(pattern, image, mask(sinks.tolist()) & image, rho, summ)
        coords = ref.head_fork(pattern, sinks, IMAGE[0], IMAGE[1] - IMAGE[0], rho, summ)
        assert torch.equal(ours.nonzero(), coords)


def test_a_head_attending_only_to_sink_tokens_is_not_image_centric():
    image, sinks = mask(range(*IMAGE)), mask([3, 6])
    pattern = torch.zeros(1, 2, 14, 14)
    pattern[0, 0, :, 3] = pattern[0, 0, :, 6] = 0.5  # head 0: all on the visual sinks
    pattern[0, 1, :, 2:10] = 1 / 8  # head 1: spread over the image; 2 of 8 tokens are sinks
    centric = vs.image_centric(pattern, image, sinks)
    assert not centric[0, 0].any()
    assert centric[0, 1].all()
    none = vs.image_centric(pattern, image, mask([]))  # no visual sink: no image-centric head
    assert not none.any()
