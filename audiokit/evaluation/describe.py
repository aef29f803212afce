"""What an audio file holds: header facts, peak and RMS level, estimated bandwidth (``audiokit info``)."""

from __future__ import annotations

import math
from pathlib import Path

from audiokit import io
from audiokit.dsp import BandwidthEstimator
from audiokit.io import RawFormat


def describe(path: Path, raw: RawFormat | None = None) -> dict:
    """Rate (Hz), channels, samples, duration (s), codec, peak/RMS (dBFS, None for silence) and estimated
    bandwidth (Hz) of ``path``, read in constant memory (``raw``: read it as headerless PCM)."""
    header = io.info(path, raw)
    estimator = BandwidthEstimator(header.sample_rate)
    peak, energy, count = 0.0, 0.0, 0
    for block in io.iter_blocks(path, raw=raw):
        peak = max(peak, float(block.abs().max()))
        energy += float(block.double().square().sum())
        count += block.numel()
        estimator.update(block)
    rms = math.sqrt(energy / count)
    return {
        "path": str(path),
        "sample_rate": header.sample_rate,
        "channels": header.channels,
        "samples": count // header.channels,
        "duration_s": round(count / header.channels / header.sample_rate, 6),
        "codec": f"{header.format}/{header.subtype}",
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
        "rms_dbfs": round(20 * math.log10(rms), 2) if rms > 0 else None,
        "bandwidth_hz": round(estimator.result(), 1),
    }
