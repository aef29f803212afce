"""Synthetic noises for enhancement training: coloured noise, mains hum, clicks and babble.

Every generator is a pure function of its ``numpy.random.Generator`` and returns float32
``(channels, samples)`` with unit RMS (``clicks``: unit peak), so callers set the level by SNR.
"""

from __future__ import annotations

import numpy as np

COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / rms if rms > 0 else x).astype(np.float32)


def coloured_noise(rng: np.random.Generator, channels: int, length: int, exponent: float) -> np.ndarray:
    """Gaussian noise whose power falls as ``1 / f**exponent`` (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.standard_normal((channels, length // 2 + 1)) + 1j * rng.standard_normal(
        (channels, length // 2 + 1)
    )
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0  # no infinite DC for pink/brown
    spectrum *= freqs ** (-exponent / 2.0)
    return _unit_rms(np.fft.irfft(spectrum, n=length, axis=-1))


def hum(rng: np.random.Generator, channels: int, length: int, sample_rate: int) -> np.ndarray:
    """Mains hum: a 50 or 60 Hz fundamental (+-1 %) with up to 20 harmonics of random falling levels."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
    t = np.arange(length) / sample_rate
    out = np.zeros(length)
    count = int(min(20, (sample_rate / 2) // f0))
    slope = rng.uniform(0.3, 1.5)  # how fast the harmonics fall (per harmonic number, in a power law)
    for k in range(1, count + 1):
        level = k**-slope * rng.uniform(0.3, 1.0) * (1.0 if k % 2 else rng.uniform(0.2, 1.0))
        out += level * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    out += 0.01 * rng.standard_normal(length)
    return _unit_rms(np.repeat(out[None], channels, axis=0))


def clicks(rng: np.random.Generator, channels: int, length: int, sample_rate: int) -> np.ndarray:
    """Sparse clicks and crackles (0.5-20 per second): short decaying noise bursts, unit peak."""
    out = np.zeros((channels, length))
    count = max(1, rng.poisson(rng.uniform(0.5, 20.0) * length / sample_rate))
    for _ in range(count):
        start = int(rng.integers(length))
        burst = max(2, int(rng.uniform(0.0002, 0.005) * sample_rate))
        decay = np.exp(-np.arange(burst) / (burst / 4.0))
        piece = rng.standard_normal(burst) * decay * rng.uniform(0.1, 1.0)
        end = min(length, start + burst)
        out[:, start:end] += piece[: end - start]
    peak = float(np.abs(out).max())
    return (out / peak if peak > 0 else out).astype(np.float32)


def babble(crops: list[np.ndarray]) -> np.ndarray:
    """Babble: the sum of speech ``crops`` (each ``(channels, samples)``), each first set to unit RMS."""
    return _unit_rms(sum(_unit_rms(c).astype(np.float64) for c in crops))
