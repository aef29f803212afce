"""Learnable front ends: differentiable STFT, adaptive filterbanks, TFR criteria, factory."""

from audiokit.frontends.adaptive import (
    PCEN,
    AdaptiveFilterbank,
    AdaptiveFilterbankState,
    AdaptiveFilterbankStream,
)
from audiokit.frontends.criteria import concentration, kurtosis, renyi_entropy, stankovic
from audiokit.frontends.diffstft import DiffSTFT, DiffSTFTStream
from audiokit.frontends.factory import (
    FRONTENDS,
    UNIT_PARAMETERS,
    LogSpectrogram,
    build_frontend,
    is_unit_parameter,
)
from audiokit.frontends.filterbank import FIRFilterbank
from audiokit.frontends.windows import continuous_window

__all__ = [
    "FRONTENDS",
    "PCEN",
    "UNIT_PARAMETERS",
    "AdaptiveFilterbank",
    "AdaptiveFilterbankState",
    "AdaptiveFilterbankStream",
    "DiffSTFT",
    "DiffSTFTStream",
    "FIRFilterbank",
    "LogSpectrogram",
    "build_frontend",
    "concentration",
    "continuous_window",
    "is_unit_parameter",
    "kurtosis",
    "renyi_entropy",
    "stankovic",
]
