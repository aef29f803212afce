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

    ``T = (n_frames - 1) * hop_length + frame_length``. Frames are cut into ``ceil(frame_length /
    hop_length)`` pieces of one hop (the last zero-padded), and piece ``j`` of every frame is added in
    one slice addition, shifted by ``j`` hops (much faster than ``F.fold`` for many rows).
    """
    *lead, n_frames, frame_length = frames.shape
    parts = -(-frame_length // hop_length)
    length = (n_frames - 1) * hop_length + frame_length
    rows = frames.reshape(-1, n_frames, frame_length)
    if parts * hop_length != frame_length:
        rows = F.pad(rows, (0, parts * hop_length - frame_length))
    pieces = rows.reshape(rows.shape[0], n_frames, parts, hop_length)
    out = frames.new_zeros(rows.shape[0], n_frames + parts - 1, hop_length)
    for j in range(parts):
        out[:, j : j + n_frames] += pieces[:, :, j]
    return out.view(rows.shape[0], -1)[:, :length].reshape(*lead, length)
