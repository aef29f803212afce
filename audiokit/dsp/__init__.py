"""Stateless signal processing: STFT, windows, filterbanks, framing, loudness, bandwidth."""

from audiokit.dsp.bandwidth import BandwidthEstimator, estimate_bandwidth
from audiokit.dsp.filterbanks import (
    erb_filterbank,
    erb_to_hz,
    hz_to_erb,
    hz_to_mel,
    linear_filterbank,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
)
from audiokit.dsp.framing import frame, overlap_add
from audiokit.dsp.loudness import k_weighting, loudness_lufs, rms_db
from audiokit.dsp.stft import istft, magnitude, stft
from audiokit.dsp.windows import gaussian_window, get_window

__all__ = [
    "BandwidthEstimator",
    "erb_filterbank",
    "erb_to_hz",
    "estimate_bandwidth",
    "frame",
    "gaussian_window",
    "get_window",
    "hz_to_erb",
    "hz_to_mel",
    "istft",
    "k_weighting",
    "linear_filterbank",
    "loudness_lufs",
    "magnitude",
    "mel_filterbank",
    "mel_spectrogram",
    "mel_to_hz",
    "overlap_add",
    "rms_db",
    "stft",
]
