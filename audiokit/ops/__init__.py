"""Fused ops with one signature per op and several backends: C++ (CPU), CUDA and Triton (GPU), torch
reference.

* :func:`dwconv_layernorm_update`: a ConvNeXt block's causal depthwise conv and LayerNorm, its conv
  state updated in place (Triton);
* :func:`convnext_block_step`: a whole ConvNeXt block step, conv + LayerNorm + MLP + residual (C++,
  ``kernels/cpu``; CUDA, ``kernels/cuda``; Triton), the compiled ones built on first use by
  :mod:`audiokit.ops.cpp` / :mod:`audiokit.ops.cuda`;
* :func:`rvq_encode`: every stage of a residual vector quantizer on latent rows, projection, nearest
  codeword and residual update (C++; CUDA; Triton).

:func:`backend_for` picks the backend: for float32 CUDA tensors the CUDA kernels when they build, else
Triton when a recent ``triton`` is importable, else the torch reference; the torch reference for CPU
tensors. The C++ kernels are opt-in: ``AUDIOKIT_OPS=cpp`` (or :func:`use_backend`) builds them on first
use and runs them for CPU tensors (see ``kernels/README.md`` for why not by default). ``AUDIOKIT_OPS=
cuda`` / ``triton`` / ``torch`` force the others. An op without a kernel for the chosen backend runs its
torch reference. The tests force Triton on the CPU, where it runs through Triton's interpreter
(``TRITON_INTERPRET=1``, set before Triton is first imported).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import torch

from audiokit.errors import ModelError, UsageError
from audiokit.ops import reference

BACKENDS = ("cpp", "cuda", "triton", "torch")
_FORCED: list[str] = []  # use_backend's choices, innermost last
_NOTED: set[str] = set()  # forced backends whose fallback to torch was told


@functools.cache
def triton_available() -> bool:
    """Whether a Triton recent enough for our kernels (3.5 or later) is installed."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # another distribution (pytorch-triton, -rocm, -xpu)
        import triton

        version = triton.__version__
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (3, 5)


def _check(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Force ``backend`` (as ``AUDIOKIT_OPS`` does) for what is prepared inside the block: blocks
    decide at ``init_state`` / first offline forward, so make sessions and models' weights inside."""
    _FORCED.append(_check(backend))
    try:
        yield
    finally:
        _FORCED.pop()


def forced_backend() -> str | None:
    """:func:`use_backend`'s choice, else ``AUDIOKIT_OPS``'s (``None``: neither); a value of
    ``AUDIOKIT_OPS`` that names no backend is a :class:`UsageError`."""
    if _FORCED:
        return _FORCED[-1]
    forced = os.environ.get("AUDIOKIT_OPS")
    if forced and forced not in BACKENDS:
        raise UsageError(f"AUDIOKIT_OPS={forced!r}: choose one of {', '.join(BACKENDS)}")
    return forced or None


def backend_for(x: torch.Tensor) -> str:
    """The backend for tensors like ``x``: :func:`use_backend`'s, else ``AUDIOKIT_OPS``'s, else for
    float32 CUDA tensors ``cuda`` (when built), ``triton`` (when available) or ``torch``, and ``torch``
    for the others.

    ``cpp``, ``cuda`` and ``triton`` stand for ``torch`` where their kernels cannot run: tensors of
    another device or dtype, or no build (``audiokit.ops.cpp`` / ``audiokit.ops.cuda``'s
    ``unavailable_reason()``), or no recent ``triton`` (:func:`triton_ready`).
    """
    forced = forced_backend()
    if forced:
        ready = {"cpp": cpp_ready, "cuda": cuda_ready, "triton": triton_ready}.get(forced)
        if ready is not None and not ready(x):
            _note_unavailable(forced, x)
            return "torch"
        return forced
    if x.dtype != torch.float32 or not x.is_cuda:
        return "torch"
    if cuda_ready(x):
        return "cuda"
    return "triton" if triton_available() else "torch"


def _note_unavailable(backend: str, x: torch.Tensor) -> None:
    """Say once per process, on stderr, why a forced ``backend`` runs the torch ops where its kernels
    are missing (no build, no ``triton``); silent for tensors of a device or dtype it does not take."""
    if backend in _NOTED or x.dtype != torch.float32:
        return
    if backend == "cpp" and x.device.type == "cpu":
        from audiokit.ops import cpp

        why = cpp.unavailable_reason()
    elif backend == "cuda" and x.is_cuda:
        from audiokit.ops import cuda

        why = cuda.unavailable_reason()
    elif backend == "triton" and not triton_available():
        why = "triton >= 3.5 is not installed"
    else:
        return
    _NOTED.add(backend)
    print(f"audiokit: the {backend} kernels cannot run here ({why}): running the torch ops", file=sys.stderr)


def exact_kernels() -> ModuleType | None:
    """The C++ kernels for integer work whose results are the same whichever code computes them (the
    entropy prior's decoding): used whenever they build, unless :func:`use_backend` / ``AUDIOKIT_OPS``
    force ``torch`` (then ``None``, and the numpy twin runs)."""
    if forced_backend() == "torch":
        return None
    from audiokit.ops import cpp

    return cpp.load()


def cpp_ready(x: torch.Tensor) -> bool:
    """Whether the C++ kernels run on tensors like ``x`` (float32 CPU; built now if need be)."""
    from audiokit.ops import cpp

    return x.dtype == torch.float32 and x.device.type == "cpu" and cpp.load() is not None


def triton_ready(x: torch.Tensor) -> bool:
    """Whether the Triton kernels run on tensors like ``x``: float32, a recent ``triton``, and a CUDA
    tensor, or any with Triton's interpreter on (``TRITON_INTERPRET=1``)."""
    if x.dtype != torch.float32 or not triton_available():
        return False
    if x.is_cuda:
        return True
    import triton

    return bool(triton.knobs.runtime.interpret)


def cuda_ready(x: torch.Tensor) -> bool:
    """Whether the CUDA kernels run on tensors like ``x`` (float32 CUDA; built now if need be)."""
    from audiokit.ops import cuda

    return x.dtype == torch.float32 and x.is_cuda and cuda.load() is not None


def dwconv_layernorm_update(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
    backend: str | None = None,
) -> torch.Tensor:
    """See :func:`audiokit.ops.reference.dwconv_layernorm_update`; ``backend`` overrides the choice."""
    if _check(backend or backend_for(x)) == "triton":
        from audiokit.ops import triton_kernels

        return triton_kernels.dwconv_layernorm_update(x, state, weight, bias, norm_weight, norm_bias, eps)
    return reference.dwconv_layernorm_update(x, state, weight, bias, norm_weight, norm_bias, eps)


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
    backend: str | None = None,
) -> torch.Tensor:
    """See :func:`audiokit.ops.reference.convnext_block_step`; ``backend`` overrides the choice.

    The C++ kernel rounds each row the same whatever the number of rows (a stream's steps equal one
    call over the whole signal bit for bit); the reference, CUDA (cuBLAS) and Triton do not promise that.
    """
    args = (x, state, taps, conv_bias, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate)
    chosen = _check(backend or backend_for(x))
    if chosen == "cpp":
        from audiokit.ops import cpp

        kernels = cpp.load()
        if kernels is None:
            raise ModelError(f"the C++ kernels are unavailable: {cpp.unavailable_reason()}")
        return kernels.convnext_block_step(*args)
    if chosen == "cuda":
        from audiokit.ops import cuda

        return cuda.convnext_block_step(*args)
    if chosen == "triton":
        from audiokit.ops import triton_kernels

        return triton_kernels.convnext_block_step(*args)
    return reference.convnext_block_step(*args)


def rvq_encode(
    rows: torch.Tensor,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor,
    codebooks: torch.Tensor,
    offsets: torch.Tensor,
    tables: torch.Tensor,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """See :func:`audiokit.ops.reference.rvq_encode`; ``backend`` overrides the choice."""
    args = (rows, proj_w, proj_b, codebooks, offsets, tables)
    chosen = _check(backend or backend_for(rows))
    if chosen == "cpp":
        from audiokit.ops import cpp

        kernels = cpp.load()
        if kernels is None:
            raise ModelError(f"the C++ kernels are unavailable: {cpp.unavailable_reason()}")
        return kernels.rvq_encode(*args)
    if chosen == "cuda":
        from audiokit.ops import cuda

        return cuda.rvq_encode(*args)
    if chosen == "triton":
        from audiokit.ops import triton_kernels

        return triton_kernels.rvq_encode(*args)
    return reference.rvq_encode(*args)
