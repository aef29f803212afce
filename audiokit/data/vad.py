"""Energy voice-activity detection used to trim silence from prepared clips."""

from __future__ import annotations

import numpy as np


def frame_energy_db(wav: np.ndarray, frame_length: int) -> np.ndarray:
    """Mean-square energy in dBFS of consecutive non-overlapping frames.

    Args:
        wav: ``(channels, samples)`` float array in [-1, 1].
        frame_length: frame size in samples; the last partial frame is zero-padded.
    Returns:
        ``(num_frames,)`` energies in dB (power relative to a full-scale DC signal).
    """
    mono = wav.mean(axis=0) if wav.ndim == 2 else wav
    num_frames = max(1, -(-mono.shape[-1] // frame_length))
    padded = np.zeros(num_frames * frame_length, dtype=np.float64)
    padded[: mono.shape[-1]] = mono
    power = (padded.reshape(num_frames, frame_length) ** 2).mean(axis=1)
    return 10.0 * np.log10(power + 1e-12)


def active_mask(
    wav: np.ndarray,
    sample_rate: int,
    frame_ms: float = 20.0,
    relative_db: float = -40.0,
    floor_db: float = -60.0,
) -> tuple[np.ndarray, int]:
    """Frames whose energy is above ``max(peak_frame + relative_db, floor_db)``.

    Returns ``(mask, frame_length)`` with ``mask`` a boolean ``(num_frames,)`` array.
    """
    frame_length = max(1, round(sample_rate * frame_ms / 1000.0))
    energy = frame_energy_db(wav, frame_length)
    threshold = max(float(energy.max()) + relative_db, floor_db)
    return energy > threshold, frame_length


def trim_silence(
    wav: np.ndarray,
    sample_rate: int,
    margin_ms: float = 50.0,
    max_gap_ms: float | None = None,
    relative_db: float = -40.0,
    floor_db: float = -60.0,
) -> np.ndarray:
    """Cut leading/trailing silence and optionally shorten long inner pauses.

    Args:
        wav: ``(channels, samples)`` float array.
        sample_rate: Hz.
        margin_ms: silence kept before the first and after the last active frame.
        max_gap_ms: inner silent runs longer than this are shortened to this length (None: keep them).
        relative_db, floor_db: activity threshold, see :func:`active_mask`.
    Returns:
        ``(channels, kept_samples)``; empty (``kept_samples == 0``) when nothing is active.
    """
    mask, frame_length = active_mask(wav, sample_rate, relative_db=relative_db, floor_db=floor_db)
    if not mask.any():
        return wav[:, :0]
    margin = round(sample_rate * margin_ms / 1000.0)
    active = np.flatnonzero(mask)
    start = max(0, active[0] * frame_length - margin)
    stop = min(wav.shape[-1], (active[-1] + 1) * frame_length + margin)
    if max_gap_ms is None:
        return wav[:, start:stop]
    max_gap = max(1, round(sample_rate * max_gap_ms / 1000.0 / frame_length))
    keep = np.ones(len(mask), dtype=bool)
    run_start = None
    for index, is_active in enumerate(mask):
        if not is_active and run_start is None:
            run_start = index
        elif is_active and run_start is not None:
            if index - run_start > max_gap:
                half = max_gap // 2
                keep[run_start + half : index - (max_gap - half)] = False
            run_start = None
    sample_keep = np.repeat(keep, frame_length)[: wav.shape[-1]]
    sample_keep[:start] = False
    sample_keep[stop:] = False
    return wav[:, sample_keep]
