"""Every streaming probe's `on_pattern` takes rows over a band of keys (`k_start`, what a
sliding-window layer's chunk covers) and gives the same results as the full rows."""

import math

import pandas as pd
import pytest
import torch

from probes.core.types import Batch
from probes.engine import fast as fastpath
from probes.families.sink import SinkParams, SinkProbe
from probes.families.top_keys import TopKeysParams, TopKeysProbe
from tests.probes.engine.test_streaming_probes import PROBES

BANDED = {
    **PROBES,
    "sink": lambda info: SinkProbe(info, SinkParams(n_positions=6)),
    "top_keys": lambda info: TopKeysProbe(info, TopKeysParams(n_prompts=2, k=3)),
    "top_keys-wide": lambda info: TopKeysProbe(info, TopKeysParams(n_prompts=2, k=8)),
}
WINDOW = 5


def sliding_patterns(n_layers, n_batch, n_heads, n, seed):
    """Softmax of random scores under a causal sliding-window mask (window 5)."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_layers, n_batch, n_heads, n, n, generator=generator) * 3
    query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    visible = (key <= query) & (key > query - WINDOW)
    return scores.masked_fill(~visible, float("-inf")).softmax(-1)


@pytest.mark.parametrize("step", [1, 3, 7])
@pytest.mark.parametrize("name", list(BANDED))
def test_banded_rows_give_the_full_rows_results(tiny_model, name, step):
    info = tiny_model.info
    n = 17
    tokens = torch.randint(3, 9, (2, n), generator=torch.Generator().manual_seed(0))  # repeats
    batch = Batch(tokens, torch.tensor([n, 13]), ("a", "b"))
    patterns = sliding_patterns(info.n_layers, 2, info.n_heads, n, seed=1)
    whole, banded = BANDED[name](info), BANDED[name](info)
    whole.start_batch(batch)
    banded.start_batch(batch)
    band_starts = set()
    for layer in range(info.n_layers):
        whole.on_pattern(layer, patterns[layer], 0, batch)
        for start in range(0, n, step):
            stop = min(start + step, n)
            k_start = max(0, start - WINDOW + 1)
            rows = patterns[layer, :, :, start:stop, k_start:stop]
            assert not patterns[layer, :, :, start:stop, :k_start].any()  # outside: zeros
            band_starts.add(k_start)
            fastpath.feed(banded, layer, rows, start, k_start, batch)
    whole.end_batch(batch)
    banded.end_batch(batch)
    assert max(band_starts) > 0  # really banded
    expected = pd.DataFrame(whole.rows())
    assert len(expected) > 0
    pd.testing.assert_frame_equal(pd.DataFrame(banded.rows()), expected, rtol=0, atol=1e-6)


def test_every_streaming_probe_takes_a_band():
    """A probe without `k_start` would be fed zero-padded rows (correct but O(T) again)."""
    import probes.families  # noqa: F401  # registers every family
    from probes.core.probe import StreamingProbe
    from probes.core.registry import PROBES as REGISTERED

    streaming = [cls for cls in REGISTERED.values() if issubclass(cls, StreamingProbe)]
    assert streaming
    for cls in streaming:
        if "pattern" in cls.reads:
            assert "k_start" in fastpath.inspect.signature(cls.on_pattern).parameters, cls.name


def test_entropy_in_place_equals_the_three_temporaries_formula_and_planted_values():
    from probes.core.reductions import attention_entropy

    rows = sliding_patterns(1, 2, 3, 11, seed=4)[0]  # exact zeros outside the window
    tiny = torch.finfo(rows.dtype).tiny
    before = -(rows * rows.clamp(min=tiny).log()).sum(-1)
    assert torch.equal(attention_entropy(rows), before)
    uniform, one_hot = torch.full((1, 1, 1, 8), 1 / 8), torch.eye(5)[None, None]
    torch.testing.assert_close(attention_entropy(uniform), torch.tensor([[[math.log(8)]]]))
    assert torch.equal(attention_entropy(one_hot), torch.zeros(1, 1, 5))
    assert attention_entropy(rows)[..., 1:].gt(0).all()  # past query 0 no row is one-hot
    assert torch.equal(rows, sliding_patterns(1, 2, 3, 11, seed=4)[0])  # input left untouched
