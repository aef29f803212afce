"""Learnable complex (analytic) FIR filterbanks: free taps designed from mel/ERB/linear responses,
or Gabor/sinc filters parameterised by centre frequency and bandwidth (Hz).

Every bank exposes ``taps() -> complex (n_bands, filter_length)``: impulse responses ``h_b[n]``
centred on tap ``(filter_length - 1) / 2`` with unit peak gain, passing positive frequencies only,
so ``|x * h_b|^2`` is a smooth band-energy envelope.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from audiokit.dsp import erb_filterbank, hz_to_mel, linear_filterbank, mel_filterbank, mel_to_hz
from audiokit.errors import UsageError

DESIGNED = ("mel", "erb", "linear")
PARAMETRIC = ("gabor", "sinc")
INITS = DESIGNED + PARAMETRIC
_DESIGN_FFT = 4096


def target_responses(kind: str, sample_rate: int, n_bands: int, f_min: float, f_max: float) -> torch.Tensor:
    """Peak-1 triangular magnitude responses ``(n_bands, _DESIGN_FFT // 2 + 1)`` on a fine grid."""
    if kind == "mel":
        fb = mel_filterbank(sample_rate, _DESIGN_FFT, n_bands, f_min, f_max, norm=None)
    elif kind == "erb":
        fb = erb_filterbank(sample_rate, _DESIGN_FFT, n_bands, f_min, f_max)
    else:
        fb = linear_filterbank(sample_rate, _DESIGN_FFT, n_bands, f_min, f_max)
    return fb / fb.amax(dim=1, keepdim=True).clamp_min(1e-12)


def design_taps(responses: torch.Tensor, filter_length: int) -> torch.Tensor:
    """Analytic FIR (frequency sampling + Hann truncation) of magnitude ``responses`` -> complex taps."""
    n_design = 2 * (responses.shape[1] - 1)
    spectrum = torch.zeros(responses.shape[0], n_design, dtype=torch.complex64)
    spectrum[:, : responses.shape[1]] = responses.to(torch.complex64)  # positive frequencies only
    impulse = torch.fft.fftshift(torch.fft.ifft(spectrum, dim=1), dim=1)  # zero phase, centred at n_design/2
    start = n_design // 2 - (filter_length - 1) // 2
    taps = (
        impulse[:, start : start + filter_length] * torch.hann_window(filter_length + 2, periodic=False)[1:-1]
    )
    gain = torch.fft.fft(taps, n=n_design, dim=1).abs().amax(dim=1, keepdim=True)
    return taps / gain.clamp_min(1e-12)


class FIRFilterbank(nn.Module):
    """``n_bands`` complex FIR band filters of ``filter_length`` taps.

    ``init`` = ``mel`` / ``erb`` / ``linear``: free learnable taps, initialised from triangular
    responses on that scale; ``gabor`` / ``sinc``: learnable ``centre_hz`` and ``bandwidth_hz``
    (Gaussian / rectangular passbands, the bandwidth being the mel band width at init).
    """

    def __init__(
        self,
        sample_rate: int,
        n_bands: int,
        filter_length: int,
        init: str = "mel",
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise UsageError(f"FIRFilterbank: unknown init {init!r}; choose one of {', '.join(INITS)}")
        self.sample_rate, self.n_bands, self.filter_length, self.init = (
            sample_rate,
            n_bands,
            filter_length,
            init,
        )
        f_max = sample_rate / 2 if f_max is None else f_max
        if init in DESIGNED:
            taps = design_taps(target_responses(init, sample_rate, n_bands, f_min, f_max), filter_length)
            self.real = nn.Parameter(taps.real.contiguous())
            self.imag = nn.Parameter(taps.imag.contiguous())
        else:
            edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_bands + 2))
            self.centre_hz = nn.Parameter(torch.tensor(edges[1:-1], dtype=torch.float32))
            self.bandwidth_hz = nn.Parameter(torch.tensor((edges[2:] - edges[:-2]) / 2, dtype=torch.float32))

    def taps(self) -> torch.Tensor:
        """Complex impulse responses ``(n_bands, filter_length)``, centred, unit peak gain."""
        if self.init in DESIGNED:
            return torch.complex(self.real, self.imag)
        nyquist = self.sample_rate / 2
        n = torch.arange(self.filter_length, device=self.centre_hz.device) - (self.filter_length - 1) / 2
        centre = self.centre_hz.clamp(0.0, nyquist)[:, None] / self.sample_rate
        # at least ~2 bins of the filter's own resolution, so the taps stay finite
        bandwidth = self.bandwidth_hz.clamp(2.0 * self.sample_rate / self.filter_length, nyquist)[:, None]
        if self.init == "gabor":  # FWHM bandwidth -> time std
            std = math.sqrt(2 * math.log(2)) * self.sample_rate / (math.pi * bandwidth)
            envelope = torch.exp(-0.5 * (n / std) ** 2) / (math.sqrt(2 * math.pi) * std)
        else:
            envelope = bandwidth / self.sample_rate * torch.sinc(bandwidth / self.sample_rate * n)
            envelope = (
                envelope * torch.hann_window(self.filter_length + 2, periodic=False, device=n.device)[1:-1]
            )
        return envelope * torch.exp(2j * math.pi * centre * n)
