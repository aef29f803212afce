"""The CPU kernels of ``kernels/cpu`` (C++), built on first use with ``torch.utils.cpp_extension``.

The sources live in the source checkout's top-level ``kernels/`` (an editable install, as ``make
setup`` makes); they are compiled once (``-O3``, OpenMP; ~30-60 s) into a cache folder,
``$AUDIOKIT_KERNELS_CACHE`` or ``~/.cache/audiokit/kernels``, one subfolder per torch version, and
loaded from there afterwards once checked against the record of their build
(:mod:`audiokit.ops.build`). Without the sources, a C++ compiler or ninja, :func:`load` returns
``None`` and :func:`unavailable_reason` says why: the callers use the torch reference.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch

from audiokit.ops.build import build_extension, ninja_missing

SOURCES = Path(__file__).resolve().parents[2] / "kernels" / "cpu"
NAME = "audiokit_kernels_cpu"
FLAGS = ["-O3", "-fopenmp"]


def cache_dir() -> Path:
    """Where the build is kept: ``$AUDIOKIT_KERNELS_CACHE`` or ``~/.cache/audiokit/kernels``, per torch."""
    root = os.environ.get("AUDIOKIT_KERNELS_CACHE") or Path.home() / ".cache" / "audiokit" / "kernels"
    return Path(root) / f"torch-{torch.__version__}"


def missing_tool() -> str | None:
    """What this machine lacks to build the C++ kernels (``None`` when nothing is missing)."""
    if not (SOURCES / "convnext_step.cpp").is_file():
        return f"kernel sources not found at {SOURCES} (install audiokit from a source checkout)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH"
    return ninja_missing()


@functools.cache
def _build() -> tuple[ModuleType | None, str | None]:
    missing = missing_tool()
    if missing is not None:
        return None, missing
    names = (
        "module.cpp",
        "convnext_step.cpp",
        "rvq_encode.cpp",
        "prior_decode.cpp",
        "low_precision_weights.cpp",
    )
    module, reason = build_extension(
        NAME, [SOURCES / name for name in names], cache_dir(), extra_cflags=FLAGS, extra_ldflags=["-fopenmp"]
    )
    if module is not None:
        _register_shapes()
    return module, reason


def _register_shapes() -> None:
    """The output shapes of the dispatcher ops the build registers (``torch.ops.audiokit``), for tracing."""

    @torch.library.register_fake("audiokit::rows_times_half")
    def _(rows: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return rows.new_empty(rows.shape[0], weights.shape[0])

    @torch.library.register_fake("audiokit::rows_times_int8")
    def _(
        rows: torch.Tensor, weights: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return rows.new_empty(rows.shape[0], weights.shape[0])


def load() -> ModuleType | None:
    """The compiled extension (built now unless the cache holds an up-to-date build), or ``None`` when it
    cannot be built here (:func:`unavailable_reason` says why)."""
    return _build()[0]


def unavailable_reason() -> str | None:
    """Why :func:`load` gives ``None`` (a missing tool, or the build's error), ``None`` if it does not."""
    return _build()[1]
