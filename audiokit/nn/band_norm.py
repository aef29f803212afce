"""Causal mean normalisation of band levels: each band's level relative to its own recent mean.

A speaker's long-term spectral envelope (formants, voice quality) and the channel's colouring (mic, EQ,
codec) are slow; the speech and the noise on top of them are fast. Subtracting each band's mean level
over the last ``window`` frames (in dB, current frame included) leaves what changes, the way cepstral
mean normalisation does for speech recognition and DeepFilterNet's exponential mean normalisation does
for its ERB features. Before ``window`` frames have been seen, the mean is over the frames seen so far.

The sliding sums are float64 (a vectorised sum may add a window in another order for another chunk
length), so streaming gives the offline output to float32 rounding whatever the chunking. The state is
zero for a new stream: the last ``window - 1`` frames' levels (zeros where none were seen, which add
nothing to a sum) and the number of frames seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from audiokit.nn.state import StreamState
from audiokit.nn.streaming import StreamingModule


@dataclass
class BandMeanState(StreamState):
    """Levels of the last ``window - 1`` frames ``(B, window - 1, bands)`` and frames seen ``(B, 1)``."""

    history: torch.Tensor
    frames: torch.Tensor


class BandMeanNormalization(nn.Module, StreamingModule):
    """Band levels ``(B, M, bands)`` (dB) -> ``(relative, mean)``, both ``(B, M, bands)``: each frame's level
    minus its band's mean over the last ``window`` frames, and that mean."""

    def __init__(self, bands: int, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.bands = bands
        self.window = window

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> BandMeanState:
        return BandMeanState(
            torch.zeros(batch_size, self.window - 1, self.bands, device=device, dtype=dtype),
            torch.zeros(batch_size, 1, device=device, dtype=dtype),
        )

    def step(
        self, level: torch.Tensor, state: BandMeanState, final: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next frames ``level (B, k, bands)``; updates ``state``."""
        frames = level.shape[1]
        if frames == 0:
            return level, level
        window = torch.cat([state.history, level], 1)
        state.history = window[:, window.shape[1] - (self.window - 1) :]
        sums = window.double().unfold(1, self.window, 1).sum(-1)  # (B, k, bands)
        seen = state.frames + torch.arange(1, frames + 1, device=level.device, dtype=level.dtype)  # (B, k)
        state.frames = state.frames + frames
        mean = (sums / seen.clamp(max=self.window)[..., None].double()).to(level.dtype)
        return level - mean, mean

    def forward(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(level, self.init_state(level.shape[0], level.device, level.dtype))
