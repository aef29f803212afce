"""Convolutions along the frequency (band) axis of per-frame band features, GTCRN / U-Net style.

A linear map of all bands at once learns each band's weights separately, so a voice whose harmonics and
formants sit a few bands higher than the training voices' looks new to it. A convolution along the band
axis applies the same weights at every band: the same pattern moved up or down gives the same features
moved (docs/training.md, session 17). Both blocks work frame by frame (no state across frames), so they
stream as they run offline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BandEncoder(nn.Module):
    """``(N, M, in_channels, bands) -> (N, M, channels, bands)``: ``layers`` GELU convolutions of
    ``kernel`` bands along the band axis ("same" padding), frame by frame."""

    def __init__(self, in_channels: int, channels: int, layers: int = 2, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1 or layers < 1:
            raise ValueError(f"kernel must be odd and layers >= 1, got kernel={kernel}, layers={layers}")
        sizes = [in_channels] + [channels] * layers
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m, c, b = x.shape
        y = x.reshape(n * m, c, b)
        for conv in self.convs:
            y = F.gelu(conv(y))
        return y.view(n, m, -1, b)


class BandDecoder(nn.Module):
    """Per-band outputs from a frame's context and its encoded bands: ``h (N, M, hidden)`` spread over
    the bands by a linear map, added to ``skip (N, M, channels, bands)`` (:class:`BandEncoder`'s output),
    then a GELU convolution of ``kernel`` bands and a per-band linear map to ``outputs`` values:
    ``(N, M, outputs, bands)``. ``bias`` sets each output's initial value."""

    def __init__(
        self,
        hidden: int,
        channels: int,
        bands: int,
        bias: list[float],
        kernel: int = 3,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        self.channels, self.bands = channels, bands
        self.expand = nn.Linear(hidden, channels * bands)
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.out = nn.Conv1d(channels, len(bias), 1)
        nn.init.normal_(self.out.weight, std=init_std)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor(bias))

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        n, m, _ = h.shape
        y = self.expand(h).view(n * m, self.channels, self.bands) + skip.reshape(
            n * m, self.channels, self.bands
        )
        y = F.gelu(self.conv(F.gelu(y)))
        return self.out(y).view(n, m, -1, self.bands)
