"""Where a result came from: machine, commit, date and package versions, for benchmarks and runs."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from audiokit.io import atomic_path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "audiokit",
    "torch",
    "numpy",
    "scipy",
    "soundfile",
    "soxr",
    "librosa",
    "pesq",
    "pystoi",
    "safetensors",
)


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checked-out commit (suffixed ``-dirty`` with uncommitted changes); outside a git checkout (a
    copy of the working tree without ``.git``, as a lent GPU machine gets) ``$AUDIOKIT_COMMIT``, else
    ``"unknown"``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # no index refresh: a run must not take the index's lock from the user's own git commands
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("AUDIOKIT_COMMIT") or "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None when missing), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The machine a measurement ran on: platform, CPU (its model and the vector instructions torch
    uses, e.g. ``AVX2`` or ``AVX512``: speed ratios differ between them), core count, torch threads,
    GPU if any."""
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def run_info() -> dict:
    """Machine, commit, UTC date and package versions of this run."""
    return {
        "machine": machine(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
    }


def finite(value):
    """``value`` with every NaN or infinite float replaced by None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` as indented JSON (NaN as null), atomically; benchmarks include :func:`run_info`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n")
    return path
