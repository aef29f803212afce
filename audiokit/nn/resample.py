"""Integer-factor upsampling by a fixed windowed-sinc FIR, offline and streaming.

Upsampling by ``factor`` inserts ``factor - 1`` zeros after each input sample and low-passes with
``lowpass_taps(factor, taps)`` (odd length, linear phase): output sample ``n`` then holds the input at
time ``(n - delay) / factor``, with ``delay = (len(taps) - 1) / 2`` output samples. The filter runs
causally in polyphase form (the stuffed zeros are never multiplied), so streaming needs only the last
``ceil(len(taps) / factor) - 1`` input samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiokit.nn.state import ConvState
from audiokit.nn.streaming import StreamingModule

DEFAULT_CUTOFF = 0.94  # passband edge as a fraction of the input's Nyquist frequency


def lowpass_taps(
    factor: int, taps_per_phase: int = 32, cutoff: float = DEFAULT_CUTOFF, beta: float = 8.0
) -> np.ndarray:
    """Kaiser-windowed sinc of ``factor * taps_per_phase - 1`` taps, passband gain ``factor``.

    ``cutoff`` is the edge as a fraction of the input's Nyquist frequency.
    """
    length = factor * taps_per_phase - 1
    n = np.arange(length) - (length - 1) / 2
    return (cutoff * np.sinc(cutoff * n / factor) * np.kaiser(length, beta)).astype(np.float64)


class Upsampler(nn.Module, StreamingModule):
    """``(B, C, T) -> (B, C, T * factor)``, delayed by :attr:`delay` output samples (see module docstring)."""

    def __init__(
        self, factor: int, channels: int = 1, taps_per_phase: int = 32, cutoff: float = DEFAULT_CUTOFF
    ) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor
        self.channels = channels
        taps = lowpass_taps(factor, taps_per_phase, cutoff) if factor > 1 else np.ones(1)
        self.taps_length = taps.size
        # polyphase form: phase p is the input convolved with taps[p::factor] (output p of every
        # ``factor``), as one conv1d of ``factor`` output channels (reversed for conv1d), so the stuffed
        # zeros are never multiplied; offline and streaming run the same filter
        per_phase = -(-taps.size // factor)
        phases = np.zeros((factor, per_phase))
        for p in range(factor):
            phase = taps[p::factor]
            phases[p, per_phase - phase.size :] = phase[::-1]
        self.register_buffer("phases", torch.tensor(phases, dtype=torch.float32)[:, None], persistent=False)

    @property
    def delay(self) -> int:
        """Output samples by which the output lags the input."""
        return (self.taps_length - 1) // 2

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        """The last ``per_phase - 1`` input samples (zeros at the start)."""
        shape = (batch_size, self.channels, self.phases.shape[-1] - 1)
        return ConvState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        batch, channels, length = x.shape
        if not length:
            return x.new_zeros(batch, channels, 0)
        full = torch.cat([state.history, x], -1)
        state.history = full[..., full.shape[-1] - state.history.shape[-1] :]
        y = self._filter(full.reshape(batch * channels, 1, -1))
        return y.reshape(batch, channels, length * self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The causal (delayed) upsampled signal; see :attr:`delay`."""
        batch, channels, length = x.shape
        padded = F.pad(x.reshape(batch * channels, 1, length), (self.phases.shape[-1] - 1, 0))
        return self._filter(padded).reshape(batch, channels, length * self.factor)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 1, per_phase - 1 + T)`` (history first) -> ``(N, T * factor)``."""
        if torch.compiler.is_compiling():  # a product: AOTInductor calls a slow library conv for conv1d
            per_phase = self.phases.shape[-1]
            windows = x[:, 0].unfold(-1, per_phase, 1).reshape(-1, per_phase)  # (N * T, per_phase)
            return (windows @ self.phases[:, 0].t()).reshape(x.shape[0], -1)
        y = F.conv1d(x, self.phases)  # (N, factor, T): output p of each input sample
        return y.transpose(1, 2).reshape(x.shape[0], -1)
