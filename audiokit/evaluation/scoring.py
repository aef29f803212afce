"""Per-file scores of test audio against its reference: every metric, averaged over channels."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from audiokit.evaluation import metrics
from audiokit.evaluation.metrics import HIGH_BAND_LSD
from audiokit.evaluation.stats import nanmean

LONG_ENOUGH_S = 1.0
"""Every metric works on this many seconds or more: a failure on a longer input is a real error."""

RELATIVE_TO_REFERENCE = ("pesq", "stoi", "estoi", "si_sdr", "stft_distance")
"""Metrics that divide by, or normalise to, the reference: undefined when it is digital silence (SI-SDR
would read -120 dB, STOI 0 and the STFT distance ~1e8 for any test audio); the log-spectral and mel
distances stay defined."""

SILENT_REFERENCE = "the reference is digital silence"
NON_FINITE = "the test audio has NaN or infinite samples"


def _measure(name: str, fn: Callable[[], float], samples: int, rate: int, skipped: dict[str, str]) -> float:
    """``fn()``, or NaN with a reason in ``skipped`` when the input (``samples`` at ``rate`` Hz) is too
    short for metric ``name``."""
    seconds = samples / rate
    try:
        value = float(fn())
    except (ValueError, IndexError, RuntimeError):
        if seconds >= LONG_ENOUGH_S:
            raise
        value = math.nan
    if math.isnan(value) and seconds < LONG_ENOUGH_S:
        skipped[name] = f"{samples} samples ({seconds:.3f} s) is too short"
    return value


def score_pair(
    reference: torch.Tensor, test: torch.Tensor, sample_rate: int, high_band_hz: float | None = None
) -> dict[str, float]:
    """Every metric in :data:`~audiokit.evaluation.metrics.METRICS` for ``(channels, samples)`` audio,
    averaged over channels, and with ``high_band_hz`` (Hz) the LSD above it (``lsd_high``).

    PESQ is wide-band at 16 kHz, narrow-band at 8 kHz, and computed after resampling at other rates.
    A metric an input is too short for (STOI needs about 0.4 s, PESQ 0.25 s), or one of
    :data:`RELATIVE_TO_REFERENCE` on a channel whose reference is digital silence, scores NaN and the
    row's ``skipped`` key says which and why (``"stoi, estoi: 0.010 s is too short"``); so does every
    metric on a channel with NaN or infinite samples (:data:`NON_FINITE`).
    """
    samples = reference.shape[-1]
    measures: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
        "pesq": lambda ref, est: metrics.pesq(ref, est, sample_rate).score,
        "stoi": lambda ref, est: metrics.stoi(ref, est, sample_rate),
        "estoi": lambda ref, est: metrics.stoi(ref, est, sample_rate, extended=True),
        "si_sdr": metrics.si_sdr,
        "lsd": metrics.log_spectral_distance,
        "mel_distance": lambda ref, est: metrics.mel_distance(ref, est, sample_rate),
        "stft_distance": metrics.multi_resolution_stft_distance,
    }
    if high_band_hz is not None:
        measures[HIGH_BAND_LSD] = partial(
            metrics.high_band_log_spectral_distance, sample_rate=sample_rate, low_hz=high_band_hz
        )
    skipped: dict[str, str] = {}
    per_channel = []
    for ref, est in zip(reference.double(), test.double(), strict=True):
        silent = not bool(ref.any())
        broken = not bool(est.isfinite().all() and ref.isfinite().all())
        scores = {}
        for name, fn in measures.items():
            if broken:  # no score at all: pystoi read NaN test audio as a perfect 1.0
                scores[name], skipped[name] = math.nan, NON_FINITE
            elif silent and name in RELATIVE_TO_REFERENCE:
                scores[name], skipped[name] = math.nan, SILENT_REFERENCE
            else:
                scores[name] = _measure(name, partial(fn, ref, est), samples, sample_rate, skipped)
        per_channel.append(scores)
    row: dict = {name: nanmean([c[name] for c in per_channel]) for name in measures}
    if skipped:
        reasons = sorted(set(skipped.values()))
        row["skipped"] = f"{', '.join(skipped)}: {'; '.join(reasons)}"
    return row
