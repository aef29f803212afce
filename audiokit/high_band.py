"""The band above an enhancer's Nyquist frequency, for input at a higher rate (44.1 and 48 kHz files).

A 16 kHz enhancer sees 0-8 kHz of a 48 kHz file; its output alone would lose the file's band above
8 kHz (sibilance, air). Here the input's own high band is kept, attenuated as the enhancer attenuated
the top of its band:

- ``low``: the input's round trip through the model's rate without the model (the same soxr
  resamplers), so ``x - low`` is the part of the input the model never sees, and the two add up to it;
- per frame boundary ``k * hop`` (``hop``: 10 ms), the gain ``g_k = sqrt(P_enhanced / P_low)``, clipped
  to [0, 1], from the two signals' power between 5/8 and 7/8 of the model's Nyquist frequency (Hann
  windows of two hops centred on the boundary), linearly interpolated between boundaries;
- output: ``enhanced + g * (x - low)``.

With the model passing its input through (``dry=1``), ``g = 1`` and the output is the input. The
gains look two hops ahead (20 ms at the input's rate, on top of the model's latency): :class:`HighBand`
takes the three aligned signals block by block, holds back what it cannot finish yet, and gives the
same output for any blocking (offline is one block).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike

from audiokit.processing import Session, stream_resampler

HOP_SECONDS = 0.01
GAIN_BAND = (0.625, 0.875)
"""The band, in fractions of the model's Nyquist frequency, whose attenuation the high band follows."""


class HighBand:
    """``push(x, low, enhanced, last)`` of ``(channels, n)`` blocks at ``rate`` Hz (arrays or CPU tensors;
    each signal may arrive ahead of the others) -> the float32 output samples that are ready; with
    ``last``, all the rest, cut to the length of ``x``. numpy in float64: a 10 ms push at 48 kHz costs
    tens of microseconds, so that a server can run one per stream."""

    def __init__(self, channels: int, rate: int, model_rate: int) -> None:
        self.hop = max(1, round(rate * HOP_SECONDS))
        size = 2 * self.hop
        self.window = np.hanning(size + 1)[:-1]  # periodic Hann
        freqs = np.fft.rfftfreq(size, 1.0 / rate)
        nyquist = model_rate / 2
        self.bins = np.flatnonzero((freqs >= GAIN_BAND[0] * nyquist) & (freqs <= GAIN_BAND[1] * nyquist))
        if not self.bins.size:
            raise ValueError(f"no analysis bin between {GAIN_BAND} x {nyquist:g} Hz at {rate} Hz")
        self.ramp = np.arange(self.hop) / self.hop
        # one hop of zeros before the start: boundary 0's window reaches back a hop
        self.signals = [np.zeros((channels, self.hop)) for _ in range(3)]
        self.received = [0, 0, 0]  # samples of x, low, enhanced received
        self.start = -self.hop  # the sample the buffers start at
        self.done = 0  # samples given out (a multiple of hop until the end)
        self.gain: np.ndarray | None = None  # (channels, 1): g at boundary `done`, once known

    def push(self, x: ArrayLike, low: ArrayLike, enhanced: ArrayLike, last: bool = False) -> np.ndarray:
        for i, block in enumerate((x, low, enhanced)):
            block = np.asarray(block, dtype=np.float64)
            if block.shape[-1]:
                self.signals[i] = np.concatenate([self.signals[i], block], -1)
                self.received[i] += block.shape[-1]
        hop, length = self.hop, self.received[0]
        if last:  # zeros after the end; every boundary up to the one after the last sample
            end = -(-length // hop) * hop
            need = end + hop - self.start
            self.signals = [
                np.pad(
                    s[:, : length - self.start], ((0, 0), (0, need - min(s.shape[-1], length - self.start)))
                )
                for s in self.signals
            ]
        else:  # boundary k needs samples up to k * hop + hop
            end = (min(self.received) - hop) // hop * hop
        if end <= self.done:
            return np.zeros((self.signals[0].shape[0], 0), np.float32)
        first = self._gains(0, 0) if self.gain is None else self.gain
        gains = np.concatenate([first, self._gains(self.done + hop, end)], -1)
        per_sample = (gains[:, :-1, None] + (gains[:, 1:] - gains[:, :-1])[..., None] * self.ramp).reshape(
            gains.shape[0], -1
        )
        x, low, enhanced = (s[:, self.done - self.start : end - self.start] for s in self.signals)
        out = enhanced + per_sample * (x - low)
        self.gain = gains[:, -1:]
        self.signals = [s[:, end - self.start :] for s in self.signals]
        self.start = self.done = end
        if last:
            out = out[:, : out.shape[-1] - (end - length)]
        return out.astype(np.float32)

    def _gains(self, first: int, last: int) -> np.ndarray:
        """``(channels, frames)`` gains at the boundaries ``first, first + hop, ..., last`` (samples)."""
        if last < first:
            return np.zeros((self.signals[0].shape[0], 0))
        hop = self.hop
        begin = first - hop - self.start
        count = (last - first) // hop + 1
        # boundary k's window is the two hops around it: consecutive hop-long blocks, side by side
        blocks = np.stack([signal[:, begin : begin + (count + 1) * hop] for signal in self.signals[1:]])
        blocks = blocks.reshape(2, blocks.shape[1], count + 1, hop)
        frames = np.concatenate([blocks[..., :-1, :], blocks[..., 1:, :]], -1)
        spectrum = np.fft.rfft(frames * self.window, axis=-1)[..., self.bins]
        powers = (spectrum.real**2 + spectrum.imag**2).sum(-1)
        low, enhanced = powers
        return np.minimum(np.sqrt(enhanced / (low + 1e-20)), 1.0)


class HighBandSession:
    """A model's streaming session at ``model_rate`` run on input at a higher ``rate`` (``(1, channels,
    n)`` blocks, :class:`~audiokit.processing.Session`): soxr down to the model's rate, the model, soxr
    back, plus the input's band above the model's Nyquist frequency (:class:`HighBand`). Output at
    ``rate``, as long as the input, aligned with it."""

    def __init__(self, session: Session, channels: int, rate: int, model_rate: int) -> None:
        self.session = session
        self.channels = channels
        self.to_model = stream_resampler(rate, model_rate, channels)
        self.from_model = stream_resampler(model_rate, rate, channels)
        self.round_trip = stream_resampler(model_rate, rate, channels)
        self.high_band = HighBand(channels, rate, model_rate)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        return self._push(x, self.session.push)

    def push_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of blocks checked at their source (the model session's ``push_checked``: it does
        not refuse the resampler's overshoot of a loud input within the peak limit)."""
        return self._push(x, self.session.push_checked)

    def _push(self, x: torch.Tensor, push: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        down = self.to_model(x[0], False)
        enhanced = self.from_model(push(down[None])[0], False)
        return torch.from_numpy(self.high_band.push(x[0], self.round_trip(down, False), enhanced))[None]

    def flush(self) -> torch.Tensor:
        down = self.to_model(torch.zeros(self.channels, 0), True)  # the resampler's tail of pushed audio
        tail = torch.cat([self.session.push_checked(down[None])[0], self.session.flush()[0]], -1)
        enhanced = self.from_model(tail, True)
        empty = torch.zeros(self.channels, 0)
        return torch.from_numpy(self.high_band.push(empty, self.round_trip(down, True), enhanced, last=True))[
            None
        ]
