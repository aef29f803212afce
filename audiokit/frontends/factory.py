"""``frontend:`` option of recipes and models: ``build_frontend(name, sample_rate, **kwargs)``.

Every front end maps ``(B, T)`` audio to ``(B, n_features, frames)`` log-domain features and has
``n_features`` and ``hop_length`` attributes. Defaults: 25 ms windows, 10 ms hop, 64 bands.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from audiokit.dsp import mel_filterbank
from audiokit.errors import UsageError
from audiokit.frontends.adaptive import AdaptiveFilterbank
from audiokit.frontends.diffstft import DiffSTFT

FRONTENDS = ("mel", "stft", "diffstft", "adaptive")
UNIT_PARAMETERS = ("win_length", "hop_length", "centre_hz", "bandwidth_hz")
"""Front-end parameters measured in samples or Hz: they need a learning rate ~1000x a network's."""


def is_unit_parameter(name: str) -> bool:
    """Whether the parameter called ``name`` (dotted, as in ``named_parameters``) is in samples or Hz."""
    return name.rsplit(".", 1)[-1] in UNIT_PARAMETERS


class LogSpectrogram(nn.Module):
    """``log(|STFT|^2 (+ mel projection) + 1e-6)``: ``(B, T)`` -> ``(B, n_features, T // hop + 1)``."""

    def __init__(self, stft: DiffSTFT, mel: torch.Tensor | None = None) -> None:
        super().__init__()
        self.stft = stft
        self.register_buffer("mel", mel, persistent=False)
        self.n_features = stft.n_freqs if mel is None else mel.shape[0]

    @property
    def hop_length(self) -> float:
        return float(self.stft.hops().detach().mean())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.stft(x)
        power = spec.real**2 + spec.imag**2
        if self.mel is not None:
            power = torch.einsum("mf,bft->bmt", self.mel.to(power.dtype), power)
        return torch.log(power + 1e-6)


def build_frontend(
    name: str,
    sample_rate: int,
    *,
    n_fft: int | None = None,
    win_length: float | None = None,
    hop_length: int | None = None,
    n_bands: int = 64,
    window: str = "hann",
    learn_hop: bool = False,
    **kwargs,
) -> nn.Module:
    """Front end ``name`` (``mel``, ``stft``, ``diffstft``, ``adaptive``) for audio at ``sample_rate`` Hz.

    ``n_bands`` is the number of mel bands (``mel``, and ``diffstft`` when ``diffstft_mel=True`` is
    passed) or filterbank bands (``adaptive``). ``diffstft`` learns its window length (and the hop with
    ``learn_hop``); give those parameters (samples) their own learning rate, e.g. 1.0. Extra ``kwargs``
    go to ``AdaptiveFilterbank`` for ``adaptive``.
    """
    hop_length = hop_length or sample_rate // 100
    win_length = win_length or round(0.025 * sample_rate)
    n_fft = n_fft or 2 ** math.ceil(math.log2(win_length))
    if name == "adaptive":
        return AdaptiveFilterbank(sample_rate, n_bands=n_bands, hop_length=hop_length, **kwargs)
    if name not in FRONTENDS:
        raise UsageError(f"frontend: unknown name {name!r}; choose one of {', '.join(FRONTENDS)}")
    use_mel = name == "mel" or kwargs.pop("diffstft_mel", False)
    if kwargs:
        raise UsageError(f"frontend {name!r}: unexpected options {', '.join(sorted(kwargs))}")
    stft = DiffSTFT(n_fft, float(win_length), float(hop_length), window, learnable=name == "diffstft")
    if name == "diffstft" and not learn_hop:
        stft.hop_length.requires_grad_(False)
    mel = mel_filterbank(sample_rate, n_fft, n_bands) if use_mel else None
    return LogSpectrogram(stft, mel)
