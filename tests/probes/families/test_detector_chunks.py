"""The detectors probe's sparse per-chunk sums equal the former dense formula (chunked, banded,
padded, both exclusions), and planted heads fed as chunk rows score their closed forms."""

import itertools

import pandas as pd
import pytest
import torch

from probes.core.types import Batch, ModelInfo
from probes.engine import fast as fastpath
from probes.families import detectors
from tests.probes.families.dense_detectors import dense_chunk_sums

INFO = ModelInfo("chunks", 2, 3, 3, 8, 32, 64, 0)
N = 17
LENGTHS = (N, 13, 5)
FLAGS = list(itertools.product([False, True], [False, True]))


class DenseDetectorProbe(detectors.DetectorProbe):
    """The probe with its former dense `on_pattern`: the reference."""

    def on_pattern(self, layer, rows, q_start, batch, k_start=0):
        p = self.params
        hits, kept = dense_chunk_sums(
            rows, batch, q_start, k_start, p.exclude_bos, p.exclude_current_token
        )
        self._batch_state(self._hits)[layer] += hits
        self._batch_state(self._kept)[layer, 0] += kept


def repeating_batch(seed: int = 0) -> Batch:
    """Tokens from a vocabulary of 3, padded with token 0: many repeats, and runs of equal
    neighbours (induction pairs on the diagonal)."""
    tokens = torch.randint(1, 4, (len(LENGTHS), N), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate(LENGTHS):
        tokens[row, length:] = 0
    return Batch(tokens, torch.tensor(LENGTHS), ("a", "b", "c"))


def chunks(step: int, window: int | None, reach: str):
    """(q_start, q_stop, k_start, k_stop) of each chunk: keys from the window's start (or 0) up
    to the chunk's last query ("diagonal", causal), the sequence's end ("end"), or only just past
    its first query ("first", so later queries' own keys and neighbours lie past the band)."""
    for start in range(0, N, step):
        stop = min(start + step, N)
        k_start = 0 if window is None else max(0, start - window + 1)
        yield start, stop, k_start, {"diagonal": stop, "end": N, "first": start + 1}[reach]


def feed(probe, patterns, batch, bands) -> pd.DataFrame:
    probe.start_batch(batch)
    for layer in range(INFO.n_layers):
        for q_start, q_stop, k_start, k_stop in bands:
            rows = patterns[layer, :, :, q_start:q_stop, k_start:k_stop]
            fastpath.feed(probe, layer, rows, q_start, k_start, batch)
    probe.end_batch(batch)
    return pd.DataFrame(probe.rows())


@pytest.mark.parametrize("exclude_bos,exclude_current", FLAGS)
@pytest.mark.parametrize("step", [1, 3, 7])
@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("reach", ["diagonal", "end", "first"])
def test_chunk_sums_equal_the_dense_formula(exclude_bos, exclude_current, step, window, reach):
    batch = repeating_batch()
    # Garbage everywhere (padding rows and keys, past the diagonal): only the masks may drop it.
    rows = torch.rand(len(LENGTHS), INFO.n_heads, N, N, generator=torch.Generator().manual_seed(1))
    for q_start, q_stop, k_start, k_stop in chunks(step, window, reach):
        chunk = rows[:, :, q_start:q_stop, k_start:k_stop]
        args = (batch, q_start, k_start, exclude_bos, exclude_current)
        hits, kept = detectors.chunk_sums(chunk, *args)
        expected_hits, expected_kept = dense_chunk_sums(chunk, *args)
        torch.testing.assert_close(hits, expected_hits, rtol=0, atol=1e-5)
        torch.testing.assert_close(kept, expected_kept, rtol=0, atol=1e-5)


@pytest.mark.parametrize("exclude_bos,exclude_current", FLAGS)
@pytest.mark.parametrize("step", [1, 3, 7])
@pytest.mark.parametrize("window", [None, 4])
def test_probe_rows_equal_the_dense_probe(exclude_bos, exclude_current, step, window):
    batch = repeating_batch(seed=2)
    shape = (INFO.n_layers, len(LENGTHS), INFO.n_heads, N, N)
    patterns = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    params = detectors.DetectorParams(
        exclude_bos=exclude_bos, exclude_current_token=exclude_current
    )
    bands = list(chunks(step, window, "diagonal"))
    ours = feed(detectors.DetectorProbe(INFO, params), patterns, batch, bands)
    expected = feed(DenseDetectorProbe(INFO, params), patterns, batch, bands)
    assert expected.value.gt(0.01).all()  # every detector has hits here: the check has teeth
    pd.testing.assert_frame_equal(ours, expected, rtol=0, atol=1e-6)


# --- planted heads, fed as chunk rows ----------------------------------------------------------

HALF = 6


def planted(key_of, n_batch: int = 2, pad: int = 4) -> tuple[torch.Tensor, Batch]:
    """[BOS, r, r] sequences (the second one `pad` tokens shorter: its r is cut, the rest
    padding) and rows where head 1 of layer 0 attends to key_of(q) alone, every other head
    uniformly; padding rows hold garbage."""
    n = 2 * HALF + 1
    r = torch.arange(10, 10 + HALF)
    tokens = torch.cat([torch.tensor([1]), r, r]).repeat(n_batch, 1)
    lengths = torch.tensor([n] + [n - pad] * (n_batch - 1))
    patterns = torch.ones(INFO.n_layers, n_batch, INFO.n_heads, n, n).tril()
    patterns /= patterns.sum(-1, keepdim=True)
    patterns[0, :, 1] = 0
    for q in range(n):
        patterns[0, :, 1, q, key_of(q)] = 1
    for row, length in enumerate(lengths.tolist()):
        tokens[row, length:] = 0
        patterns[:, row, :, length:] = 0.5  # garbage past the end
    return patterns, Batch(tokens, lengths, tuple("ab"[:n_batch]))


def planted_scores(key_of, **flags) -> pd.DataFrame:
    patterns, batch = planted(key_of)
    n = patterns.shape[-1]
    bands = [(s, min(s + 3, n), max(0, s - 8), min(s + 3, n)) for s in range(0, n, 3)]
    assert any(band[2] > 0 for band in bands)  # really banded: the window starts past BOS
    # (the plants stay inside it: a key outside would leave the closed forms short)
    probe = detectors.DetectorProbe(INFO, detectors.DetectorParams(**flags))
    probe.start_batch(batch)
    for q_start, q_stop, k_start, k_stop in bands:
        rows = patterns[0, :, :, q_start:q_stop, k_start:k_stop]
        probe.on_pattern(0, rows, q_start, batch, k_start=k_start)
    probe.end_batch(batch)
    rows = pd.DataFrame(probe.rows())
    return rows[(rows.layer == 0) & (rows["head"] == 1)].set_index("metric").value


def test_planted_previous_token_head_scores_its_closed_form_and_not_induction():
    scores = planted_scores(lambda q: max(q - 1, 0))
    n, short = 2 * HALF + 1, 2 * HALF + 1 - 4
    assert scores["previous_token"] == pytest.approx(((n - 1) / n + (short - 1) / short) / 2)
    assert scores["induction"] == pytest.approx(0.0, abs=1e-12)  # r has no equal neighbours
    assert scores["duplicate_token"] == pytest.approx(0.0, abs=1e-12)


def test_planted_induction_head_scores_its_closed_form_and_not_previous_token():
    # attends to the token after the previous occurrence; BOS while in the first half
    scores = planted_scores(lambda q: q - HALF + 1 if q > HALF else 0, exclude_bos=True)
    assert scores["induction"] == pytest.approx(1.0)
    assert scores["previous_token"] == pytest.approx(0.0, abs=1e-12)
    assert scores["duplicate_token"] == pytest.approx(0.0, abs=1e-12)
