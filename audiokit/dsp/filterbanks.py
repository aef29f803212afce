"""Mel and ERB frequency scales and triangular filterbanks on an rFFT grid."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from audiokit.dsp.stft import stft

_MEL_F_SP = 200.0 / 3  # Slaney: Hz per mel below 1 kHz
_MEL_MIN_LOG_HZ = 1000.0
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(freq_hz: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Hz -> mel: Slaney's scale (linear below 1 kHz, log above; librosa's default) or HTK's."""
    f = np.asarray(freq_hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mel = f / _MEL_F_SP
    log_part = _MEL_MIN_LOG_HZ / _MEL_F_SP + np.log(np.maximum(f, 1e-10) / _MEL_MIN_LOG_HZ) / _MEL_LOG_STEP
    return np.where(f >= _MEL_MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    min_log_mel = _MEL_MIN_LOG_HZ / _MEL_F_SP
    return np.where(
        m >= min_log_mel, _MEL_MIN_LOG_HZ * np.exp(_MEL_LOG_STEP * (m - min_log_mel)), m * _MEL_F_SP
    )


def hz_to_erb(freq_hz: np.ndarray | float) -> np.ndarray:
    """Hz -> ERB-rate (Glasberg & Moore 1990): ``21.4 * log10(1 + 0.00437 f)``."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(freq_hz, dtype=np.float64))


def erb_to_hz(erb: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_erb`."""
    return (10.0 ** (np.asarray(erb, dtype=np.float64) / 21.4) - 1.0) / 0.00437


def _triangles(edges_hz: np.ndarray, fft_freqs: np.ndarray) -> np.ndarray:
    """Triangles with feet at ``edges[i]``, ``edges[i + 2]`` and peak 1 at ``edges[i + 1]``."""
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


def _fft_freqs(sample_rate: int, n_fft: int) -> np.ndarray:
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate)


@lru_cache(maxsize=64)
def _mel_numpy(sample_rate, n_fft, n_mels, f_min, f_max, htk, norm) -> np.ndarray:
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, htk), hz_to_mel(f_max, htk), n_mels + 2), htk)
    weights = _triangles(edges, _fft_freqs(sample_rate, n_fft))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` float32, equal to ``librosa.filters.mel``.

    ``norm="slaney"`` scales each triangle to unit area (per Hz); ``None`` keeps peak 1.
    """
    return torch.from_numpy(
        _mel_numpy(sample_rate, n_fft, n_mels, float(f_min), f_max, htk, norm).astype(np.float32)
    )


def linear_filterbank(
    sample_rate: int, n_fft: int, n_bands: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular filters equally spaced in Hz ``(n_bands, n_fft // 2 + 1)``, peak 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = np.linspace(f_min, f_max, n_bands + 2)
    return torch.from_numpy(_triangles(edges, _fft_freqs(sample_rate, n_fft)).astype(np.float32))


def erb_filterbank(
    sample_rate: int,
    n_fft: int,
    n_bands: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """Triangular filters equally spaced on the ERB-rate scale ``(n_bands, n_fft // 2 + 1)``, peak 1.

    Bands narrower than the FFT bin spacing still get their nearest bin (weight 1), so every band
    responds to something.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = erb_to_hz(np.linspace(hz_to_erb(f_min), hz_to_erb(f_max), n_bands + 2))
    freqs = _fft_freqs(sample_rate, n_fft)
    weights = _triangles(edges, freqs)
    empty = weights.max(axis=1) == 0
    nearest = np.abs(freqs[None, :] - edges[1:-1, None]).argmin(axis=1)
    weights[empty, nearest[empty]] = 1.0
    return torch.from_numpy(weights.astype(np.float32))


def mel_spectrogram(
    x: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    f_min: float = 0.0,
    f_max: float | None = None,
    power: float = 1.0,
    win_length: int | None = None,
    center: bool = True,
) -> torch.Tensor:
    """Mel spectrogram of ``(..., T)`` audio -> ``(..., n_mels, frames)`` (``|STFT| ** power``, Hann)."""
    spec = stft(x, n_fft, hop_length, win_length, center=center).abs()
    if power != 1.0:
        spec = spec.pow(power)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).to(spec)
    return torch.einsum("mf,...ft->...mt", fb, spec)
