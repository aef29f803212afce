"""Causal noise-floor tracking per band: how far each band's power stands above its recent minimum.

Continuous minimum tracking (the classic noise estimator of speech enhancement): the band power, smoothed
over the last ``smooth_frames`` frames, in dB, ``S[m]``, and a floor that follows it down at once and
rises at most ``rise_db`` per frame, ``N[m] = min(S[m], N[m - 1] + rise_db)``, i.e.
``N[m] = rise_db * m + min_{k <= m} (S[k] - rise_db * k)``. Speech comes and goes within a few hundred
milliseconds, so the floor stays near the noise under it; the feature is ``P[m] - N[m]``, the frame's
band power above the floor (an a-posteriori SNR in dB).

The closed form is what both paths compute: every value ``S[k] - rise_db * k`` is one float64 rounding of
the absolute frame index ``k``, and running minima are exact, so streaming gives bitwise the offline
floors for any chunking. The state is zero for a new stream: the frames seen so far (0 means none yet)
and the running minimum. The first ``smooth_frames`` frames, whose smoothing window (and the causal STFT's
first frame) reach into the silence before the stream, do not enter the minimum: their floor is their
own smoothed level. A stream that starts in digital silence puts the floor at -100 dB, from where it
rises at its rate (the fast rates are there for that, among other things).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from audiokit.nn.state import StreamState
from audiokit.nn.streaming import StreamingModule

POWER_FLOOR = 1e-10
"""Added to band powers before the logarithm (the enhancer's band features use the same)."""


@dataclass
class NoiseFloorState(StreamState):
    """Band powers of the last ``smooth_frames - 1`` frames ``(B, smooth_frames - 1, bands)``, frames
    seen ``(B, 1)`` (float64) and the running minima ``(B, rates, bands)`` (float64, dB)."""

    history: torch.Tensor
    frames: torch.Tensor
    minimum: torch.Tensor


class NoiseFloor(nn.Module, StreamingModule):
    """Band powers ``(B, M, bands)`` (linear) -> power above the tracked floor ``(B, M, rates * bands)``
    in dB, float32: one block of ``bands`` per rise rate of ``rise_db`` (dB per frame)."""

    def __init__(self, bands: int, rise_db: tuple[float, ...], smooth_frames: int = 3) -> None:
        super().__init__()
        if not rise_db or min(rise_db) <= 0:
            raise ValueError(f"rise rates must be > 0 dB per frame, got {rise_db}")
        if smooth_frames < 1:
            raise ValueError(f"smooth_frames must be >= 1, got {smooth_frames}")
        self.bands = bands
        self.smooth_frames = smooth_frames
        rise = torch.tensor(rise_db, dtype=torch.float64)
        self.register_buffer("rise", rise[None, :, None, None], persistent=False)  # (1, rates, 1, 1)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> NoiseFloorState:
        rates = self.rise.shape[1]
        return NoiseFloorState(
            torch.zeros(batch_size, self.smooth_frames - 1, self.bands, device=device, dtype=dtype),
            torch.zeros(batch_size, 1, device=device, dtype=torch.float64),
            torch.zeros(batch_size, rates, self.bands, device=device, dtype=torch.float64),
        )

    def step(self, power: torch.Tensor, state: NoiseFloorState, final: bool = False) -> torch.Tensor:
        """Features of the next frames ``power (B, k, bands)``; updates ``state``."""
        batch, frames, _ = power.shape
        if not frames:  # nothing new: no features, the state stays
            return power.new_zeros(batch, 0, self.rise.shape[1] * self.bands, dtype=torch.float32)
        window = torch.cat([state.history, power], 1)
        state.history = window[:, window.shape[1] - (self.smooth_frames - 1) :]
        smoothed = window.unfold(1, self.smooth_frames, 1).sum(-1) / self.smooth_frames  # (B, k, bands)
        level = 10.0 * torch.log10(smoothed.double() + POWER_FLOOR)
        index = state.frames + torch.arange(frames, device=power.device, dtype=torch.float64)  # (B, k)
        slope = self.rise * index[:, None, :, None]  # (B, rates, k, 1)
        early = (index < self.smooth_frames)[:, None, :, None]  # windows reaching before the stream
        previous = state.minimum[:, :, None].masked_fill(state.frames[:, :, None, None] == 0, torch.inf)
        tilted = (level[:, None] - slope).masked_fill(early, torch.inf)
        running = torch.minimum(tilted.cummin(2).values, previous)  # (B, rates, k, bands)
        state.minimum = running[:, :, -1]
        state.frames = state.frames + frames
        floor = torch.where(running.isinf(), level[:, None], running + slope)
        above = 10.0 * torch.log10(power.double() + POWER_FLOOR)[:, None] - floor
        return above.transpose(1, 2).reshape(batch, frames, -1).float()

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return self.step(power, self.init_state(power.shape[0], power.device, power.dtype))
