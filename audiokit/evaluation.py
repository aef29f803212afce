"""Paired evaluation of test audio against references: file pairing, per-file metrics, statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audiokit import metrics
from audiokit.errors import UsageError
from audiokit.io import AUDIO_EXTENSIONS

METRICS = ("pesq", "stoi", "estoi", "si_sdr", "lsd", "mel_distance", "stft_distance")


@dataclass(frozen=True)
class FilePair:
    """A reference file and the test file it is compared with; ``name`` is the relative path."""

    name: str
    reference: Path
    test: Path | None


def find_audio(root: Path, pattern: str = "*", extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Files with ``extensions`` under ``root`` (or ``root`` itself), relative path matching ``pattern``."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"{root}: no such file or directory")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and p.relative_to(root).match(pattern)
    )
    if not files:
        raise UsageError(f"{root}: no files ({', '.join(extensions)}) matching {pattern!r}")
    return files


def _match(reference: Path, ref_root: Path, test_root: Path) -> Path | None:
    relative = reference.relative_to(ref_root)
    exact = test_root / relative
    if exact.is_file():
        return exact
    for ext in AUDIO_EXTENSIONS:
        candidate = (test_root / relative).with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def pair_files(ref_root: Path, test_root: Path | None, pattern: str = "*") -> list[FilePair]:
    """Pair each reference audio file with the test file at the same relative path.

    The test file may have another audio extension (``a/b.flac`` pairs with ``a/b.wav``). With
    ``test_root=None`` the pairs have no test file (a baseline will make it). Missing partners are
    an error listing how many are missing and the first one.
    """
    references = find_audio(ref_root, pattern)
    if test_root is None:
        return [
            FilePair(p.name if ref_root.is_file() else str(p.relative_to(ref_root)), p, None)
            for p in references
        ]
    if ref_root.is_file() != test_root.is_file():
        raise UsageError(f"{ref_root} and {test_root}: give two files or two directories")
    if ref_root.is_file():
        return [FilePair(ref_root.name, ref_root, test_root)]
    if not test_root.is_dir():
        raise UsageError(f"{test_root}: no such directory")
    pairs = [FilePair(str(p.relative_to(ref_root)), p, _match(p, ref_root, test_root)) for p in references]
    missing = [p.name for p in pairs if p.test is None]
    if missing:
        raise UsageError(
            f"{test_root}: no test file for {len(missing)} of {len(pairs)} reference files "
            f"(first: {missing[0]})"
        )
    return pairs


def check_compatible(
    pair: FilePair, ref: torch.Tensor, ref_rate: int, test: torch.Tensor, test_rate: int
) -> None:
    """Refuse pairs whose rate, channel count or length differ, with a message naming both files."""
    if ref_rate != test_rate:
        raise UsageError(
            f"{pair.test}: sample rate {test_rate} Hz differs from reference {pair.reference} ({ref_rate} Hz)"
        )
    if ref.shape[0] != test.shape[0]:
        raise UsageError(
            f"{pair.test}: {test.shape[0]} channels but reference {pair.reference} has {ref.shape[0]}"
        )
    if ref.shape[1] != test.shape[1]:
        raise UsageError(
            f"{pair.test}: {test.shape[1]} samples but reference {pair.reference} has {ref.shape[1]} "
            "(decoded length must equal the input length)"
        )


def score_pair(reference: torch.Tensor, test: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Every metric in :data:`METRICS` for ``(channels, samples)`` audio, averaged over channels.

    PESQ is wide-band at 16 kHz, narrow-band at 8 kHz, and computed after resampling at other rates.
    """
    per_channel = []
    for ref, est in zip(reference.double(), test.double(), strict=True):
        per_channel.append(
            {
                "pesq": metrics.pesq(ref, est, sample_rate).score,
                "stoi": metrics.stoi(ref, est, sample_rate),
                "estoi": metrics.stoi(ref, est, sample_rate, extended=True),
                "si_sdr": metrics.si_sdr(ref, est),
                "lsd": metrics.log_spectral_distance(ref, est),
                "mel_distance": metrics.mel_distance(ref, est, sample_rate),
                "stft_distance": metrics.multi_resolution_stft_distance(ref, est),
            }
        )
    return {name: nanmean([c[name] for c in per_channel]) for name in METRICS}


def nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN (without numpy's empty-slice warning) when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class Summary:
    """Mean and 95 % confidence half-width (Student t) of each metric over files.

    NaN scores (e.g. PESQ finding no speech) are left out; ``count`` says how many values each mean
    holds.
    """

    n: int
    mean: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)


def summarize(rows: list[dict[str, float]]) -> Summary:
    """Aggregate per-file metric rows into a :class:`Summary`."""
    import scipy.stats  # imported here: seconds of start-up otherwise

    summary = Summary(n=len(rows))
    for name in METRICS:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        summary.count[name] = int(values.size)
        summary.mean[name] = float(values.mean()) if values.size else math.nan
        if values.size > 1:
            half = scipy.stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
            summary.ci95[name] = float(half)
        else:
            summary.ci95[name] = math.nan
    return summary
