"""The CUDA kernels of ``kernels/cuda`` (``.cu`` + torch glue), built on first use with
``torch.utils.cpp_extension`` when a GPU is present.

Built like :mod:`audiokit.ops.cpp`: from the source checkout, once (nvcc + the C++ compiler, ~1-2 min)
into ``<cache_dir()>/cuda``, one folder per version of the sources, reloaded from there afterwards
(once checked against the record of its build). Without a GPU, a CUDA build of torch, nvcc, the sources or
ninja, :func:`load` returns ``None`` and :func:`unavailable_reason` says why: the callers use Triton
or the torch reference.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from types import ModuleType

import torch

from audiokit.errors import ModelError
from audiokit.ops.build import build_extension, ninja_missing
from audiokit.ops.cpp import cache_dir

SOURCES = Path(__file__).resolve().parents[2] / "kernels" / "cuda"
FILES = ("module.cpp", "convnext_step.cpp", "convnext_step.cu", "rvq_encode.cpp", "rvq_encode.cu")
NAME = "audiokit_kernels_cuda"


def missing_tool() -> str | None:
    """What this machine lacks to build or run the CUDA kernels (``None`` when nothing is missing)."""
    if not all((SOURCES / name).is_file() for name in FILES):
        return f"kernel sources not found at {SOURCES} (install audiokit from a source checkout)"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    if not torch.cuda.is_available():
        return "no CUDA device"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or shutil.which(str(Path(CUDA_HOME) / "bin" / "nvcc")) is None:
        return "nvcc not found (set CUDA_HOME to the CUDA toolkit)"
    return ninja_missing()


@functools.cache
def _build() -> tuple[ModuleType | None, str | None]:
    missing = missing_tool()
    if missing is not None:
        return None, missing
    return build_extension(
        NAME,
        [SOURCES / name for name in FILES],
        cache_dir() / "cuda",
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        extra_include_paths=[str(SOURCES)],
    )


def load() -> ModuleType | None:
    """The compiled extension (built now unless the cache holds an up-to-date build), or ``None`` when it
    cannot be built or run here (:func:`unavailable_reason` says why)."""
    return _build()[0]


def unavailable_reason() -> str | None:
    """Why :func:`load` gives ``None``, ``None`` if it does not."""
    return _build()[1]


def convnext_block_step(
    x: torch.Tensor,
    state: torch.Tensor,
    taps: torch.Tensor,
    conv_bias: torch.Tensor | None,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    approximate: str = "none",
) -> torch.Tensor:
    """:func:`audiokit.ops.reference.convnext_block_step` on the CUDA kernels (float32, on x's device
    and torch's current stream there)."""
    kernels = load()
    if kernels is None:
        raise ModelError(f"the CUDA kernels are unavailable: {unavailable_reason()}")
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream().cuda_stream
        return kernels.convnext_block_step(
            x, state, taps, conv_bias, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, stream
        )


def rvq_encode(
    rows: torch.Tensor,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor,
    codebooks: torch.Tensor,
    offsets: torch.Tensor,
    tables: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`audiokit.ops.reference.rvq_encode` on the CUDA kernel (on rows' device and torch's current
    stream there)."""
    kernels = load()
    if kernels is None:
        raise ModelError(f"the CUDA kernels are unavailable: {unavailable_reason()}")
    with torch.cuda.device(rows.device):
        stream = torch.cuda.current_stream().cuda_stream
        return kernels.rvq_encode(rows, proj_w, proj_b, codebooks, offsets, tables, stream)
