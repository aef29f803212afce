"""The causal pitch analysis against a naive loop; streaming chooses the lags offline processing chooses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiokit.dsp import erb_filterbank
from audiokit.nn.pitch import LAG_PENALTY, PitchSpectrum, band_pitch_correlation, fast_fft_size

N_FFT, HOP, MIN_LAG, MAX_LAG = 320, 160, 40, 320


def _voiced(f0: float, seconds: float = 0.5, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """A harmonic tone (f0 in Hz, 16 kHz) plus white noise, ``(1, 1, T)``."""
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 12) if f0 * k < 7000)
    x = x + noise * np.random.default_rng(seed).standard_normal(len(t))
    return torch.from_numpy(x.astype(np.float32))[None, None]


def _naive(x: np.ndarray) -> tuple[list[int], list[float], np.ndarray]:
    """Lag, periodicity and lagged spectrum of every causal frame, one frame and one lag at a time."""
    history = N_FFT + MAX_LAG - HOP
    padded = np.concatenate(
        [np.zeros(history), x.astype(np.float64), np.zeros((-len(x)) % HOP + N_FFT - HOP)]
    )
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))
    lags, periodicities, spectra = [], [], []
    for end in range(history + HOP, len(padded) + 1, HOP):
        frame = padded[end - N_FFT : end]
        scores = []
        for lag in range(MIN_LAG, MAX_LAG + 1):
            segment = padded[end - N_FFT - lag : end - lag]
            scores.append(frame @ segment / np.sqrt((frame @ frame) * (segment @ segment) + 1e-12))
        penalised = np.array(scores) - LAG_PENALTY * np.arange(len(scores)) / (MAX_LAG - MIN_LAG)
        best = int(np.argmax(penalised))
        lags.append(best + MIN_LAG)
        periodicities.append(float(np.clip(scores[best], -1, 1)))
        lag = best + MIN_LAG
        spectra.append(np.fft.rfft(padded[end - N_FFT - lag : end - lag] * window))
    return lags, periodicities, np.array(spectra).T


@pytest.mark.parametrize("signal", ["voiced", "noise"])
def test_matches_a_naive_loop(signal):
    x = (
        _voiced(150.0, 0.3)
        if signal == "voiced"
        else torch.randn(1, 1, 4321, generator=torch.Generator().manual_seed(3))
    )
    pitch_spec, periodicity, lag = PitchSpectrum(N_FFT, HOP, MIN_LAG, MAX_LAG)(x)
    lags, periodicities, spectra = _naive(x[0, 0].numpy())
    assert lag[0].tolist() == lags
    np.testing.assert_allclose(periodicity[0].numpy(), periodicities, atol=1e-5)
    np.testing.assert_allclose(pitch_spec[0].numpy(), spectra, atol=1e-4)


@pytest.mark.parametrize("f0", [100.0, 200.0, 320.0])
def test_finds_the_period_of_voiced_sound(f0):
    _, periodicity, lag = PitchSpectrum()(_voiced(f0))
    steady = slice(5, -3)  # frames whose past is all tone
    np.testing.assert_allclose(lag[0, steady].numpy(), 16000 / f0, atol=1)  # not a multiple of it
    assert float(periodicity[0, steady].min()) > 0.9
    _, periodicity, _ = PitchSpectrum()(torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(0)))
    assert float(periodicity[0, 5:-3].mean()) < 0.3


def test_streaming_chooses_the_offline_lags():
    x = torch.cat(
        [_voiced(130.0, 0.6, seed=1), torch.randn(1, 1, 5000, generator=torch.Generator().manual_seed(1))], -1
    )
    x = x.repeat(2, 1, 1) * torch.tensor([1.0, 0.01])[:, None, None]
    block = PitchSpectrum()
    offline = block(x)
    padded = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % HOP + N_FFT - HOP))
    state, outputs, pos = block.init_state(2, x.device, x.dtype), [], 0
    for hops in [1, 3, 2, 7, 1, 5] * 20:
        if pos >= padded.shape[-1]:
            break
        outputs.append(block.step(padded[..., pos : pos + hops * HOP], state))
        pos += hops * HOP
    streamed = [torch.cat([out[i] for out in outputs], -1) for i in range(3)]
    assert torch.equal(streamed[2], offline[2])
    torch.testing.assert_close(streamed[0], offline[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed[1], offline[1], atol=1e-6, rtol=0)


def test_silence():
    pitch_spec, periodicity, lag = PitchSpectrum()(torch.zeros(1, 1, 1600))
    assert float(pitch_spec.abs().max()) == 0.0 and float(periodicity.abs().max()) == 0.0
    assert bool((lag == MIN_LAG).all())


def test_band_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    spec = rng.standard_normal((2, 161, 7)) + 1j * rng.standard_normal((2, 161, 7))
    pitch = rng.standard_normal((2, 161, 7)) + 1j * rng.standard_normal((2, 161, 7))
    pitch[1] = 2.0 * spec[1]  # fully correlated: 1 in every band
    bands = erb_filterbank(16000, 320, 32)
    got = band_pitch_correlation(
        torch.from_numpy(spec).cfloat(), torch.from_numpy(pitch).cfloat(), bands
    ).numpy()
    w = bands.numpy()
    for n in range(2):
        for m in range(7):
            x, p = spec[n, :, m], pitch[n, :, m]
            expected = (w @ (x * p.conj()).real) / np.sqrt(
                (w @ np.abs(x) ** 2) * (w @ np.abs(p) ** 2) + 1e-12
            )
            np.testing.assert_allclose(got[n, m], expected, atol=1e-5)
    np.testing.assert_allclose(got[1], 1.0, atol=1e-5)


def test_fast_fft_size_is_the_smallest_5_smooth_size():
    def smooth(n: int) -> bool:
        for prime in (2, 3, 5):
            while n % prime == 0:
                n //= prime
        return n == 1

    for length in range(1, 2000):
        size = fast_fft_size(length)
        assert size >= length and smooth(size)
        assert not any(smooth(n) for n in range(length, size))
    assert PitchSpectrum(N_FFT, HOP, MIN_LAG, MAX_LAG).fft_size == 640


def test_a_max_lag_off_the_hop_grid_is_rejected_when_built():
    """The running energies sum whole hops of history, so max_lag must be a multiple of the hop: a clear
    error when the block is built, not a RuntimeError from unflatten at the first frame."""
    with pytest.raises(ValueError, match="max_lag"):
        PitchSpectrum(64, 16, 8, 40)
    pitch = PitchSpectrum(64, 16, 8, 48)
    assert pitch(torch.randn(1, 1, 100))[2].shape == (1, 10)  # ceil(100 / 16) + 64 / 16 - 1 frames
