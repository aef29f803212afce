"""Pairing reference and test files by relative path, and checking that a pair can be compared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from audiokit.errors import UsageError
from audiokit.io import AUDIO_EXTENSIONS, find_audio


@dataclass(frozen=True)
class FilePair:
    """A reference file and the test file it is compared with; ``name`` is the relative path."""

    name: str
    reference: Path
    test: Path | None


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
