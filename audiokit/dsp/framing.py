"""Framing and overlap-add."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def frame(x: torch.Tensor, frame_length: int, hop_length: int, pad_end: bool = False) -> torch.Tensor:
    """Cut ``(..., T)`` into ``(..., n_frames, frame_length)`` frames every ``hop_length`` samples.

    Without ``pad_end`` only complete frames are returned (``1 + (T - frame_length) // hop_length``);
    with it the signal is zero-padded so the last samples fall in a frame.
    """
    length = x.shape[-1]
    if pad_end:
        n_frames = max(1, -(-max(length - frame_length, 0) // hop_length) + 1)
        x = F.pad(x, (0, (n_frames - 1) * hop_length + frame_length - length))
    return x.unfold(-1, frame_length, hop_length)


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum ``(..., n_frames, frame_length)`` frames placed every ``hop_length`` samples -> ``(..., T)``.

    ``T = (n_frames - 1) * hop_length + frame_length``.
    """
    *lead, n_frames, frame_length = frames.shape
    length = (n_frames - 1) * hop_length + frame_length
    flat = frames.reshape(-1, n_frames, frame_length).transpose(1, 2)
    out = F.fold(flat, (1, length), (1, frame_length), stride=(1, hop_length))
    return out.reshape(*lead, length)
