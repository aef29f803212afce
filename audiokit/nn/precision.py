"""Float16 and int8 weights for inference: prepared matrices rounded to a coarser grid, stored twice.

One stream's compiled step (:mod:`audiokit.streaming.compiled`) spends most of its time reading the
weights from memory, once per product (kernels/README.md). With ``set_weight_precision(model,
"float16")`` every block rounds the matrices it prepares for inference (weight norm evaluated,
LayerScale folded in) to the nearest float16 values; with ``"int8"``, each product matrix's column
(one output) to the nearest multiple of its own scale, ``max |column| / 127``, i.e. to 255 levels.
Either way the model is one fixed model everywhere: offline ``forward`` in evaluation mode and eager
steps multiply float32 copies of the rounded values, and each copy carries a compact twin
(:func:`weight_twin`: an ``(out, in)`` float16 tensor, or :class:`Int8Matrix`) that compiled steps
hand to the ``audiokit::rows_times_half`` / ``rows_times_int8`` kernels
(``kernels/cpu/low_precision_weights.cpp``), which read half or a quarter of the bytes. Streaming
therefore still equals offline within 1e-5, as for any compiled step (set the precision before opening
sessions: open ones keep the weights they prepared). Training mode prepares float32 weights as before
(an evaluation forward with autograd on rounds with an identity gradient); biases, norms, the
quantiser and blocks whose offline forward does not multiply their prepared weights (LSTMs:
``rounds_weights = False``) stay float32, and so do the taps of depthwise convolutions in int8 (a
dataclass field marked ``metadata={"products": False}``: no product reads them, and a scale per column
would mix their channels).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from audiokit.errors import UsageError

PRECISIONS = ("float32", "float16", "int8")
_FLAG = "_weight_precision"
PREPARED_CACHES = ("_prepared", "_lookup")
"""Where blocks keep what they prepare from their weights (``StreamingModule.prepare``,
``VectorQuantizer.prepare_lookup``), keyed by the weights' version counters."""
_TWIN = "_audiokit_weight_twin"
INT8_LEVELS = 127
"""int8 weights use the symmetric grid ``-127 .. 127`` times a scale per output."""


class Int8Matrix(NamedTuple):
    """The int8 twin of a prepared ``(in, out)`` matrix: ``values (out, in)`` int8 and ``scales
    (out,)`` float32, the matrix being ``(values * scales[:, None]).t()``."""

    values: torch.Tensor
    scales: torch.Tensor


def set_weight_precision(model: nn.Module, precision: str) -> None:
    """Make every streaming block of ``model`` prepare its inference matrices in ``precision``
    (``"float32"``, the default, ``"float16"`` or ``"int8"``); prepared weights are made afresh at next
    use."""
    from audiokit.nn.streaming import StreamingModule

    if precision not in PRECISIONS:
        raise UsageError(f"weight precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    for module in model.modules():
        if isinstance(module, StreamingModule):
            module.__dict__[_FLAG] = precision
            module.__dict__.pop("_prepared", None)


def weight_precision(model: nn.Module) -> str:
    """The precision the blocks of ``model`` prepare their weights in (``"float32"`` unless a block
    prepares float16 or int8 ones)."""
    flagged = {m.__dict__.get(_FLAG, "float32") for m in model.modules()}
    return next((p for p in PRECISIONS[1:] if p in flagged), "float32")


def precision_key(model: nn.Module) -> str:
    """Which blocks of ``model`` prepare weights in which precision other than float32, as text (for
    the keys of compiled steps)."""
    flagged = ((name, m.__dict__.get(_FLAG, "float32")) for name, m in model.named_modules())
    return repr([(name, p) for name, p in flagged if p != "float32"])


def module_precision(module: nn.Module) -> str:
    """The precision ``module`` prepares its own weights in."""
    return module.__dict__.get(_FLAG, "float32")


def rounded_weights(prepared: Any, precision: str, keep_grad: bool = False) -> Any:
    """``prepared`` (tensors in tuples, lists, named tuples or dataclasses) with every floating matrix
    (2-D, both sides longer than 1: product matrices and depthwise taps, which offline and streaming
    arithmetic share; not biases, nor the 3-D conv weights only grouped and transposed convs' steps
    read) rounded to ``precision``'s values (``"float16"`` or ``"int8"``; still float32), each carrying
    its twin (:func:`weight_twin`); with ``keep_grad``, rounded with an identity gradient instead (the
    same values, no twin).

    Raises ``ValueError`` for a weight beyond float16's range (|w| > 65504) in float16."""
    if isinstance(prepared, torch.Tensor):
        if not prepared.is_floating_point() or prepared.dim() != 2 or min(prepared.shape) < 2:
            return prepared
        rounded, twin = (_to_half if precision == "float16" else _to_int8)(prepared.detach())
        if keep_grad:  # exact: the rounding error of each weight is a float32 number
            return prepared + (rounded - prepared.detach())
        setattr(rounded, _TWIN, twin)
        return rounded
    if isinstance(prepared, tuple) and hasattr(prepared, "_fields"):
        return type(prepared)(*(rounded_weights(v, precision, keep_grad) for v in prepared))
    if isinstance(prepared, (tuple, list)):
        return type(prepared)(rounded_weights(v, precision, keep_grad) for v in prepared)
    if is_dataclass(prepared) and not isinstance(prepared, type):
        for field in fields(prepared):
            if precision == "int8" and not field.metadata.get("products", True):
                continue
            value = getattr(prepared, field.name)
            setattr(prepared, field.name, rounded_weights(value, precision, keep_grad))
    return prepared


def _to_half(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rounded = matrix.half().float()
    if not torch.isfinite(rounded).all():
        raise ValueError("float16 weights: a weight is beyond float16's range (|w| > 65504)")
    return rounded, rounded.t().contiguous().half()


def _to_int8(matrix: torch.Tensor) -> tuple[torch.Tensor, Int8Matrix]:
    """``(in, out)`` -> the matrix on each column's grid (float32) and its :class:`Int8Matrix`."""
    peak = matrix.abs().amax(0)
    scales = torch.where(peak > 0, peak / INT8_LEVELS, torch.ones_like(peak))
    values = torch.round(matrix / scales).clamp(-INT8_LEVELS, INT8_LEVELS)
    return values * scales, Int8Matrix(values.t().contiguous().to(torch.int8), scales.contiguous())


def weight_twin(matrix: torch.Tensor) -> torch.Tensor | Int8Matrix | None:
    """The compact copy of a prepared ``(in, out)`` matrix rounded by :func:`rounded_weights`: its
    ``(out, in)`` float16 tensor or its :class:`Int8Matrix` (``None`` for any other tensor)."""
    return getattr(matrix, _TWIN, None)
