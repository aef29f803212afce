"""Mixing clean speech with noise at a given signal-to-noise ratio."""

from __future__ import annotations

import numpy as np


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB: ``10 log10(sum(clean**2) / sum(noise**2))`` over the whole clip."""
    return float(
        10.0 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    )


def loop_excerpt(noise: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``length`` samples of ``(channels, samples)`` noise from ``offset`` on, looping it where it is short.

    (Trimming or zero-padding to a length is :func:`audiokit.evaluation.baselines.fit_length`.)
    """
    reps = -(-(offset + length) // noise.shape[-1])
    tiled = np.tile(noise, (1, reps)) if reps > 1 else noise
    return tiled[:, offset : offset + length]


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, target_snr_db: float, peak: float = 0.99
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``noise`` to ``target_snr_db`` below ``clean`` and add it.

    Args:
        clean, noise: ``(channels, samples)`` float arrays of equal shape; noise must not be silent.
        target_snr_db: SNR in dB (see :func:`snr_db`).
        peak: if the mixture peaks above this, clean and mixture are both scaled down by the same
            factor, so the pair stays aligned and the SNR is unchanged.
    Returns:
        ``(clean, noisy)`` float32 arrays of the input shape.
    """
    clean_power = np.sum(clean.astype(np.float64) ** 2)
    noise_power = np.sum(noise.astype(np.float64) ** 2)
    gain = np.sqrt(clean_power / (noise_power * 10.0 ** (target_snr_db / 10.0)))
    noisy = clean + gain * noise
    top = float(np.abs(noisy).max())
    scale = peak / top if top > peak else 1.0
    return (clean * scale).astype(np.float32), (noisy * scale).astype(np.float32)
