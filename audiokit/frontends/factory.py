"""Front ends by name: ``build_frontend(name, sample_rate, **kwargs)`` (``AudioClassifier(frontend=...)``;
no recipe key: the enhancer's ``band_features`` builds its own, see docs/frontends.md).

Every front end maps ``(B, T)`` audio to ``(B, n_features, frames)`` log-domain features and has
``n_features`` and ``hop_length`` attributes. Defaults: 25 ms windows, 10 ms hop, 64 bands.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from audiokit.checks import whole_number
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
    window: str | None = None,
    learn_hop: bool = False,
    pad_mode: str | None = None,
    **kwargs,
) -> nn.Module:
    """Front end ``name`` (``mel``, ``stft``, ``diffstft``, ``adaptive``) for audio at ``sample_rate`` Hz.

    ``n_bands`` is the number of mel bands (``mel``, and ``diffstft`` when ``diffstft_mel=True`` is
    passed) or filterbank bands (``adaptive``). ``n_fft``, ``win_length`` (samples), ``window`` (default
    ``hann``) and ``pad_mode`` (``reflect`` by default; ``constant`` also takes inputs of ``n_fft // 2``
    samples or fewer) set the STFT of ``mel``, ``stft`` and ``diffstft``; ``diffstft`` learns its window
    length (and the hop with ``learn_hop``); give those parameters (samples) their own learning rate,
    e.g. 1.0. ``adaptive`` is a bank of FIR filters, not an STFT: it takes ``hop_length``, ``n_bands``
    and, as extra ``kwargs``, the options of ``AdaptiveFilterbank``; options a front end cannot honour
    raise :class:`~audiokit.errors.UsageError`.
    """
    if name not in FRONTENDS:
        raise UsageError(f"frontend: unknown name {name!r}; choose one of {', '.join(FRONTENDS)}")
    if learn_hop and name != "diffstft":
        raise UsageError(
            f"frontend {name!r}: learn_hop is for 'diffstft' (the only front end with a learnable hop)"
        )
    sample_rate = whole_number(sample_rate, f"frontend {name!r}: sample_rate")
    hop_length = sample_rate // 100 if hop_length is None else hop_length
    if name == "adaptive":
        stft_options = {"n_fft": n_fft, "win_length": win_length, "window": window, "pad_mode": pad_mode}
        return _adaptive(sample_rate, n_bands, hop_length, stft_options, kwargs)
    if win_length is None:
        win_length = round(0.025 * sample_rate)
    elif not 0 < win_length < math.inf:  # before n_fft is derived from it (DiffSTFT checks the rest)
        raise UsageError(f"frontend {name!r}: win_length must be a number > 0 samples, got {win_length!r}")
    n_fft = 2 ** math.ceil(math.log2(win_length)) if n_fft is None else n_fft
    window = window or "hann"
    use_mel = name == "mel" or kwargs.pop("diffstft_mel", False)
    if kwargs:
        raise UsageError(f"frontend {name!r}: unexpected options {', '.join(sorted(kwargs))}")
    if use_mel:
        n_bands = whole_number(n_bands, f"frontend {name!r}: n_bands")
    stft = DiffSTFT(
        n_fft,
        float(win_length),
        float(hop_length),
        window,
        learnable=name == "diffstft",
        pad_mode=pad_mode or "reflect",
    )
    if name == "diffstft" and not learn_hop:
        stft.hop_length.requires_grad_(False)
    mel = mel_filterbank(sample_rate, stft.n_fft, n_bands) if use_mel else None
    return LogSpectrogram(stft, mel)


def _adaptive(
    sample_rate: int, n_bands: int, hop_length: int, stft_options: dict, options: dict
) -> AdaptiveFilterbank:
    """``AdaptiveFilterbank`` with ``options``, or a :class:`~audiokit.errors.UsageError` for any of the
    ``stft_options`` given (not ``None``) or ``options`` it does not take."""
    given = [key for key, value in stft_options.items() if value is not None]
    if given:
        raise UsageError(
            f"frontend 'adaptive': {', '.join(given)} set an STFT, and the adaptive front end is a bank of "
            "FIR filters: its resolution is filter_length (samples, default 4 * hop_length + 1) and its "
            "analyser reads Hann frames of 2 * hop_length samples; drop them, or use 'stft' or 'diffstft'"
        )
    known = set(inspect.signature(AdaptiveFilterbank).parameters) - {"sample_rate", "n_bands", "hop_length"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"frontend 'adaptive': unexpected options {', '.join(unknown)}; "
            f"it takes n_bands, hop_length, {', '.join(sorted(known))}"
        )
    return AdaptiveFilterbank(sample_rate, n_bands=n_bands, hop_length=hop_length, **options)
