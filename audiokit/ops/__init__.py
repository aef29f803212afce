"""Fused ops with one signature per op and several backends: Triton (GPU) > torch reference.

:func:`dwconv_layernorm_update` is the streaming step of a ConvNeXt block's causal depthwise conv
and LayerNorm, with its conv state updated in place. :func:`backend_for` picks the backend: Triton
for float32 CUDA tensors when a recent ``triton`` is importable, the torch reference otherwise.
``AUDIOKIT_OPS=torch`` (or ``triton``) in the environment forces a backend; the tests force Triton on
the CPU, where it runs through Triton's interpreter (``TRITON_INTERPRET=1``, set before Triton is
first imported).
A CUDA C++ version would join here with the same signature once a GPU measurement shows it pays.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os

import torch

from audiokit.ops import reference

BACKENDS = ("triton", "torch")


@functools.cache
def triton_available() -> bool:
    """Whether a Triton recent enough for our kernels (3.5 or later) is installed."""
    if importlib.util.find_spec("triton") is None:
        return False
    major, minor = (int(part) for part in importlib.metadata.version("triton").split(".")[:2])
    return (major, minor) >= (3, 5)


def backend_for(x: torch.Tensor) -> str:
    """The fastest backend for tensors like ``x`` (``AUDIOKIT_OPS=torch`` or ``triton`` forces one).

    The kernels are float32: other dtypes get the torch reference.
    """
    forced = os.environ.get("AUDIOKIT_OPS")
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"AUDIOKIT_OPS={forced!r}: choose one of {', '.join(BACKENDS)}")
        return forced
    if x.dtype == torch.float32 and x.is_cuda and triton_available():
        return "triton"
    return "torch"


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
    backend = backend or backend_for(x)
    if backend == "triton":
        from audiokit.ops import triton_kernels

        return triton_kernels.dwconv_layernorm_update(x, state, weight, bias, norm_weight, norm_bias, eps)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return reference.dwconv_layernorm_update(x, state, weight, bias, norm_weight, norm_bias, eps)
