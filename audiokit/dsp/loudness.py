"""Signal level: RMS in dBFS and an ITU-R BS.1770-style K-weighted, gated loudness (LUFS)."""

from __future__ import annotations

import math

import numpy as np
import torch

from audiokit.errors import UsageError


def rms_db(x: torch.Tensor | np.ndarray, eps: float = 1e-12) -> float:
    """RMS level of all samples in dBFS (a full-scale square wave is 0 dBFS; silence -> -120 dB)."""
    power = torch.as_tensor(x).double().square().mean().item()
    return 10.0 * math.log10(max(power, eps))


def k_weighting(sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BS.1770 K-weighting as two biquads ``(b_shelf, a_shelf, b_highpass, a_highpass)`` at any rate.

    The analogue prototypes (high shelf +4 dB near 1.7 kHz, high-pass near 38 Hz) are mapped with the
    bilinear transform, which reproduces the 48 kHz coefficients tabulated in BS.1770.
    """
    k = math.tan(math.pi * 1681.974450955533 / sample_rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b_shelf = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    a_shelf = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    k = math.tan(math.pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    b_high = np.array([1.0, -2.0, 1.0])
    a_high = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return b_shelf, a_shelf, b_high, a_high


def _channel_weights(channels: int) -> np.ndarray:
    weights = np.ones(channels)
    if channels == 6:  # 5.1 in L, R, C, LFE, Ls, Rs order: LFE ignored, surrounds +1.5 dB
        weights[3] = 0.0
        weights[4:] = 1.41
    return weights


def loudness_lufs(wav: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of ``(channels, samples)`` audio (or ``(samples,)``, or one item
    ``(1, channels, samples)``; a tensor or a numpy array, as :func:`~audiokit.dsp.estimate_bandwidth`
    takes) at ``sample_rate`` Hz in LUFS (BS.1770-4 gating).

    K-weighting, mean square in 400 ms blocks with 75 % overlap, absolute gate at -70 LUFS and
    relative gate 10 LU below the gated mean. Inputs shorter than 400 ms form a single block.
    Returns ``-inf`` when nothing passes the absolute gate (silence). Other shapes (a batch of
    several items) raise :class:`~audiokit.errors.UsageError`.
    """
    import scipy.signal  # imported here: it costs seconds at start-up for every user of audiokit.dsp

    x = wav.detach().double().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float64)
    x = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise UsageError(
            f"loudness_lufs takes (channels, samples) audio, got shape {tuple(np.shape(wav))}; "
            "measure each item of a batch on its own"
        )
    b1, a1, b2, a2 = k_weighting(sample_rate)
    y = scipy.signal.lfilter(b2, a2, scipy.signal.lfilter(b1, a1, x, axis=-1), axis=-1)
    block = int(round(0.4 * sample_rate))
    if y.shape[-1] < block:
        powers = (y**2).mean(axis=-1, keepdims=True)
    else:
        step = block // 4
        frames = np.lib.stride_tricks.sliding_window_view(y, block, axis=-1)[:, ::step]
        powers = (frames**2).mean(axis=-1)
    block_power = _channel_weights(x.shape[0]) @ powers
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(block_power)
    gated = block_power[block_lufs > -70.0]
    if gated.size == 0:
        return float("-inf")
    relative_gate = -0.691 + 10.0 * np.log10(gated.mean()) - 10.0
    gated = block_power[block_lufs > max(relative_gate, -70.0)]
    return float(-0.691 + 10.0 * np.log10(gated.mean()))
