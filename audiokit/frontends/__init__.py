"""Learnable front ends: differentiable STFT, adaptive filterbanks, TFR criteria, factory."""

from audiokit.frontends.criteria import concentration, kurtosis, renyi_entropy, stankovic
from audiokit.frontends.diffstft import DiffSTFT, DiffSTFTStream
from audiokit.frontends.windows import continuous_window

__all__ = [
    "DiffSTFT",
    "DiffSTFTStream",
    "concentration",
    "continuous_window",
    "kurtosis",
    "renyi_entropy",
    "stankovic",
]
