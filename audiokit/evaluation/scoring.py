"""Per-file scores of test audio against its reference: every metric, averaged over channels."""

from __future__ import annotations

import torch

from audiokit.evaluation import metrics
from audiokit.evaluation.metrics import METRICS
from audiokit.evaluation.stats import nanmean


def score_pair(reference: torch.Tensor, test: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Every metric in :data:`METRICS` for ``(channels, samples)`` audio, averaged over channels.

    PESQ is wide-band at 16 kHz, narrow-band at 8 kHz, and computed after resampling at other rates.
    """
    per_channel = []
    for ref, est in zip(reference.double(), test.double(), strict=True):
        per_channel.append(
            {
                "pesq": metrics.pesq(ref, est, sample_rate).score,
                "stoi": metrics.stoi(ref, est, sample_rate),
                "estoi": metrics.stoi(ref, est, sample_rate, extended=True),
                "si_sdr": metrics.si_sdr(ref, est),
                "lsd": metrics.log_spectral_distance(ref, est),
                "mel_distance": metrics.mel_distance(ref, est, sample_rate),
                "stft_distance": metrics.multi_resolution_stft_distance(ref, est),
            }
        )
    return {name: nanmean([c[name] for c in per_channel]) for name in METRICS}
