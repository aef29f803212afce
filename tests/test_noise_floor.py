"""Noise-floor tracking: against a per-frame loop, streaming bitwise equal to offline, fresh rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiokit.nn.noise_floor import POWER_FLOOR, NoiseFloor
from audiokit.nn.state import zero_rows

RISES = (0.05, 0.2)


def reference(power: np.ndarray, rise: float, smooth: int = 3) -> np.ndarray:
    """``P[m] - N[m]`` in dB by the recursion ``N[m] = min(S[m], N[m - 1] + rise)``, one frame at a time."""
    frames, bands = power.shape
    out = np.zeros((frames, bands))
    for band in range(bands):
        history, floor = [0.0] * (smooth - 1), None
        for m in range(frames):
            window = history + [float(power[m, band])]
            history = window[1:]
            level = 10 * np.log10(sum(window) / smooth + POWER_FLOOR)
            if m < smooth:  # windows reaching before the stream: not tracked
                current = level
            else:
                floor = current = level if floor is None else min(level, floor + rise)
            out[m, band] = 10 * np.log10(power[m, band] + POWER_FLOOR) - current
    return out


@pytest.fixture
def power() -> torch.Tensor:
    torch.manual_seed(0)
    speech = (torch.rand(2, 80, 5) < 0.3) * torch.rand(2, 80, 5) * 100  # bursts over a drifting floor
    return (torch.rand(2, 80, 5) + speech) * torch.logspace(-3, -1, 80)[None, :, None]


def test_matches_the_recursion(power):
    out = NoiseFloor(5, RISES)(power)
    assert out.shape == (2, 80, 10) and out.dtype == torch.float32
    for b in range(2):
        for i, rise in enumerate(RISES):
            expected = reference(power[b].numpy(), rise)
            np.testing.assert_allclose(out[b, :, 5 * i : 5 * i + 5], expected, atol=1e-4)


def test_tracks_the_noise_under_bursts(power):
    """Under a burst the feature is the burst's height above the noise, not 0 as against its own level."""
    noise = torch.ones(1, 200, 1)
    burst = noise.clone()
    burst[:, 100:130] = 1000.0  # 30 dB for 0.3 s
    above = NoiseFloor(1, (0.05,))(burst)[0, :, 0]
    assert float(above[3:100].abs().max()) < 1e-4  # the first 3 frames' smoothing reaches before the start
    assert float(above[100:130].min()) > 30.0 - 0.05 * 30 - 1e-3  # the floor rose at most 1.5 dB


@pytest.mark.parametrize("chunks", [[1] * 80, [7, 1, 40, 32], [80]])
def test_streaming_is_bitwise_offline(power, chunks):
    block = NoiseFloor(5, RISES)
    state = block.init_state(2, torch.device("cpu"), torch.float32)
    starts = np.cumsum([0] + chunks)
    spans = zip(starts[:-1], starts[1:], strict=True)
    streamed = torch.cat([block.step(power[:, a:b], state) for a, b in spans], 1)
    assert torch.equal(streamed, block(power))


def test_zeroed_rows_start_afresh(power):
    block = NoiseFloor(5, RISES)
    state = block.init_state(2, torch.device("cpu"), torch.float32)
    block.step(power[:, :40], state)
    zero_rows(state, torch.tensor([1]))
    out = block.step(power[:, 40:], state)
    assert torch.equal(out[1], block(power[1:, 40:])[0])
    assert not torch.equal(out[0], block(power[:1, 40:])[0])
