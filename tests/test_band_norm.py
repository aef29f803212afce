"""Band mean normalisation: against a naive loop, and streaming equal to offline for any chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiokit.nn.band_norm import BandMeanNormalization


def _naive(level: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.zeros_like(level)
    for t in range(level.shape[1]):
        mean[:, t] = level[:, max(0, t - window + 1) : t + 1].mean(1)
    return level - mean, mean


@pytest.mark.parametrize("window", [1, 5, 40])
def test_relative_levels_match_a_naive_loop(window):
    generator = torch.Generator().manual_seed(window)
    level = torch.randn(2, 57, 8, generator=generator, dtype=torch.float64) * 20 - 40
    relative, mean = BandMeanNormalization(8, window)(level)
    want_relative, want_mean = _naive(level.numpy(), window)
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(relative.numpy(), want_relative, rtol=0, atol=1e-10)


def test_a_constant_envelope_is_taken_out():
    """Two voices differing by a fixed spectral tilt give the same relative levels once the window is full."""
    torch.manual_seed(0)
    level = torch.randn(1, 80, 16) * 10 - 30
    tilt = torch.linspace(-12, 12, 16)
    norm = BandMeanNormalization(16, 20)
    first, _ = norm(level)
    second, _ = norm(level + tilt)
    torch.testing.assert_close(first, second, atol=1e-4, rtol=0)


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(0, 30), max_size=8), seed=st.integers(0, 2**16))
def test_streaming_equals_offline(chunks, seed):
    level = torch.randn(3, 90, 8, generator=torch.Generator().manual_seed(seed)) * 15 - 50
    norm = BandMeanNormalization(8, 25)
    offline = norm(level)
    state, pieces, pos = norm.init_state(3, level.device, level.dtype), [], 0
    for size in [*chunks, 90]:
        pieces.append(norm.step(level[:, pos : pos + size], state))
        pos = min(90, pos + size)
    for index in range(2):
        streamed = torch.cat([p[index] for p in pieces], 1)
        torch.testing.assert_close(streamed, offline[index], atol=1e-5, rtol=0)
