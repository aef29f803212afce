"""Shared fixtures: real sample clips and markers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

# CI and dev machines have 2 cores shared by several processes: one thread per test process is
# several times faster than oversubscribing.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def speech_files() -> list[Path]:
    """Real wideband speech clips shipped in samples/ (see samples/LICENSES.md)."""
    files = sorted(SAMPLES.glob("speech_*_16k*.flac"))
    if not files:
        pytest.fail("samples/ holds no speech_*_16k*.flac clips: the repository is incomplete")
    return files
