"""Audio bandwidth estimation: the highest frequency holding real content."""

from __future__ import annotations

import numpy as np
import torch

_LEVEL_FLOOR_DB = -120.0
_LEVEL_BINS = 140  # 1 dB bins from -120 to +20 dBFS


def analysis_size(sample_rate: int) -> int:
    """FFT size used for bandwidth analysis: the power of two nearest to 64 ms (at least 4 samples)."""
    return max(4, int(2 ** round(np.log2(0.064 * sample_rate))))


class BandwidthEstimator:
    """Streaming bandwidth estimate in constant memory.

    Feed ``(channels, n)`` blocks with :meth:`update`; :meth:`result` returns the highest frequency
    (Hz) whose mean power over *active* frames is within ``threshold_db`` of the spectral peak.
    Active frames are those within ``active_range_db`` of the loudest frame and above -70 dBFS.
    Frame spectra are accumulated per 1 dB level bin, so activity can be judged at the end.
    """

    def __init__(self, sample_rate: int, threshold_db: float = 50.0, active_range_db: float = 40.0) -> None:
        self.sample_rate = sample_rate
        self.threshold_db = threshold_db
        self.active_range_db = active_range_db
        self.n_fft = analysis_size(sample_rate)
        self.window = np.hanning(self.n_fft + 1)[:-1]
        self.sums = np.zeros((_LEVEL_BINS, self.n_fft // 2 + 1))
        self.counts = np.zeros(_LEVEL_BINS, dtype=np.int64)
        self.pending = np.zeros(0)

    def update(self, block: torch.Tensor | np.ndarray) -> None:
        """Add a ``(channels, n)`` or ``(n,)`` block of samples (channels are averaged)."""
        x = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        x = x.reshape(-1, x.shape[-1]).mean(axis=0).astype(np.float64)
        x = np.concatenate([self.pending, x])
        hop = self.n_fft // 2
        n_frames = max(0, (x.shape[0] - self.n_fft) // hop + 1)
        if n_frames:
            frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[::hop][:n_frames]
            levels = 10 * np.log10(np.maximum(frames.var(axis=1), 1e-30))
            power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2
            bins = np.clip((levels - _LEVEL_FLOOR_DB).astype(int), 0, _LEVEL_BINS - 1)
            np.add.at(self.sums, bins, power)
            np.add.at(self.counts, bins, 1)
        self.pending = x[n_frames * hop :]

    def result(self) -> float:
        """Estimated bandwidth in Hz (0.0 when there is no active content, or under 10 ms of audio: a few
        samples' spectrum is broadband whatever they hold)."""
        if not self.counts.any() and self.pending.shape[0] < self.sample_rate // 100:
            return 0.0
        if self.pending.shape[0] and not self.counts.any():
            padded = np.zeros(self.n_fft)
            padded[: self.pending.shape[0]] = self.pending
            self.pending = np.zeros(0)
            self.update(padded)
        used = np.nonzero(self.counts)[0]
        if used.size == 0:
            return 0.0
        loudest = used.max()
        low = max(int(-70 - _LEVEL_FLOOR_DB), loudest - int(self.active_range_db))
        active = slice(low, _LEVEL_BINS)
        if self.counts[active].sum() == 0:
            return 0.0
        mean_power = self.sums[active].sum(axis=0) / self.counts[active].sum()
        peak = mean_power.max()
        if peak <= 0:
            return 0.0
        above = np.nonzero(mean_power >= peak * 10 ** (-self.threshold_db / 10))[0]
        return float(above.max() * self.sample_rate / self.n_fft)


def estimate_bandwidth(wav: torch.Tensor | np.ndarray, sample_rate: int, threshold_db: float = 50.0) -> float:
    """Highest frequency (Hz) within ``threshold_db`` of the spectral peak of active frames.

    ``wav`` is ``(channels, samples)`` or ``(samples,)``; see :class:`BandwidthEstimator`.
    """
    estimator = BandwidthEstimator(sample_rate, threshold_db)
    estimator.update(wav)
    return estimator.result()
