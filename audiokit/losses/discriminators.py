"""Waveform discriminators: multi-scale STFT (EnCodec), multi-period (HiFi-GAN), multi-band
multi-resolution (DAC).

Every discriminator maps ``(B, C, T)`` audio to ``(logits, features)``: ``logits`` is a list with
one tensor of unnormalised real/fake scores per sub-discriminator, ``features`` a list (same order)
of the lists of intermediate activations used by :func:`audiokit.losses.feature_matching_loss`.
Convolutions are weight-normalised; STFT windows are buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from audiokit.dsp import get_window

Output = tuple[list[torch.Tensor], list[list[torch.Tensor]]]


def _conv2d(*args, **kwargs) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(*args, **kwargs))


def _run(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor, slope: float) -> tuple[torch.Tensor, list]:
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), slope)
        features.append(x)
    x = post(x)
    features.append(x)
    return x, features


def _complex_channels(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, normalized: bool):
    """``(B, C, T)`` -> real and imaginary STFT parts as channels ``(B, 2C, frames, n_fft // 2 + 1)``."""
    batch, channels, length = x.shape
    spec = torch.stft(
        x.reshape(-1, length), n_fft, hop, n_fft, window, normalized=normalized, return_complex=True
    )
    spec = torch.view_as_real(spec).reshape(batch, channels, *spec.shape[-2:], 2)
    return spec.permute(0, 1, 4, 3, 2).reshape(batch, 2 * channels, spec.shape[-2], spec.shape[-3])


class STFTDiscriminator(nn.Module):
    """2-D conv stack on one complex STFT (real/imag as channels), dilated in time, strided in frequency."""

    def __init__(
        self,
        n_fft: int,
        channels: int = 1,
        filters: int = 32,
        dilations: Sequence[int] = (1, 2, 4),
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.slope = n_fft, n_fft // 4, slope
        self.register_buffer("window", get_window("hann", n_fft), persistent=False)
        convs = [_conv2d(2 * channels, filters, (3, 9), padding=(1, 4))]
        for d in dilations:
            convs.append(_conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        convs.append(_conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(convs)
        self.post = _conv2d(filters, 1, (3, 3), padding=(1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = _complex_channels(x, self.n_fft, self.hop_length, self.window, normalized=True)
        return _run(self.convs, self.post, spec, self.slope)


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFTD: one :class:`STFTDiscriminator` per FFT size (hop a quarter of it)."""

    def __init__(
        self, channels: int = 1, filters: int = 32, n_ffts: Sequence[int] = (1024, 2048, 512)
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([STFTDiscriminator(n, channels, filters) for n in n_ffts])

    def forward(self, x: torch.Tensor) -> Output:
        outs = [disc(x) for disc in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN period discriminator: the waveform folded into ``(T / period, period)`` and 2-D convs
    with ``(5, 1)`` kernels, so each column sees samples exactly ``period`` apart."""

    def __init__(
        self,
        period: int,
        channels: int = 1,
        widths: Sequence[int] = (32, 128, 512, 1024, 1024),
        slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.period, self.slope = period, slope
        convs, previous = [], channels
        for i, width in enumerate(widths):
            stride = (3, 1) if i < len(widths) - 1 else (1, 1)
            convs.append(_conv2d(previous, width, (5, 1), stride=stride, padding=(2, 0)))
            previous = width
        self.convs = nn.ModuleList(convs)
        self.post = _conv2d(previous, 1, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, channels, length = x.shape
        pad = (-length) % self.period
        x = F.pad(x, (0, pad), mode="reflect" if pad < length else "constant")
        x = x.reshape(batch, channels, -1, self.period)
        return _run(self.convs, self.post, x, self.slope)


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's MPD: one :class:`PeriodDiscriminator` per period."""

    def __init__(
        self,
        channels: int = 1,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        widths: Sequence[int] = (32, 128, 512, 1024, 1024),
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([PeriodDiscriminator(p, channels, widths) for p in periods])

    def forward(self, x: torch.Tensor) -> Output:
        outs = [disc(x) for disc in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class BandSplitSTFTDiscriminator(nn.Module):
    """DAC's multi-band discriminator at one resolution: the complex STFT is cut into frequency
    bands (``bands`` as fractions of the bins), each band has its own 2-D conv stack, and the band
    outputs are joined along frequency before the final conv."""

    def __init__(
        self,
        window_length: int,
        channels: int = 1,
        filters: int = 32,
        bands: Sequence[tuple[float, float]] = (
            (0.0, 0.1),
            (0.1, 0.25),
            (0.25, 0.5),
            (0.5, 0.75),
            (0.75, 1.0),
        ),
        slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.slope = window_length, window_length // 4, slope
        self.register_buffer("window", get_window("hann", window_length), persistent=False)
        bins = window_length // 2 + 1
        self.bands = [(int(lo * bins), int(hi * bins)) for lo, hi in bands]

        def stack() -> nn.ModuleList:
            convs = [_conv2d(2 * channels, filters, (3, 9), padding=(1, 4))]
            convs += [_conv2d(filters, filters, (3, 9), stride=(1, 2), padding=(1, 4)) for _ in range(3)]
            convs.append(_conv2d(filters, filters, (3, 3), padding=(1, 1)))
            return nn.ModuleList(convs)

        self.band_convs = nn.ModuleList([stack() for _ in self.bands])
        self.post = _conv2d(filters, 1, (3, 3), padding=(1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = _complex_channels(x, self.n_fft, self.hop_length, self.window, normalized=False)
        features, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs, strict=True):
            y = spec[..., lo:hi]
            for conv in convs:
                y = F.leaky_relu(conv(y), self.slope)
                features.append(y)
            outs.append(y)
        y = self.post(torch.cat(outs, dim=-1))
        features.append(y)
        return y, features


class MultiBandMultiResolutionDiscriminator(nn.Module):
    """DAC's MRD: one :class:`BandSplitSTFTDiscriminator` per window length (hop a quarter of it)."""

    def __init__(
        self, channels: int = 1, filters: int = 32, window_lengths: Sequence[int] = (2048, 1024, 512)
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [BandSplitSTFTDiscriminator(w, channels, filters) for w in window_lengths]
        )

    def forward(self, x: torch.Tensor) -> Output:
        outs = [disc(x) for disc in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class CombinedDiscriminator(nn.Module):
    """Several multi-discriminators run on the same input, their outputs concatenated (e.g. MPD + MRD)."""

    def __init__(self, *discriminators: nn.Module) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, x: torch.Tensor) -> Output:
        logits, features = [], []
        for disc in self.discriminators:
            lg, ft = disc(x)
            logits += lg
            features += ft
        return logits, features
