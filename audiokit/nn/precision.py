"""Float16 weights for inference: prepared matrices rounded to float16 values, stored twice.

One stream's compiled step (:mod:`audiokit.streaming.compiled`) spends most of its time reading the
weights from memory, once per product (kernels/README.md). With ``set_weight_precision(model,
"float16")`` every block rounds the matrices it prepares for inference (weight norm evaluated,
LayerScale folded in) to the nearest float16 values, so the model is one fixed float16-valued model
everywhere: offline ``forward`` in evaluation mode and eager steps multiply float32 copies of those
values, and each copy carries an ``(out, in)`` float16 twin (:func:`half_twin`) that compiled steps
hand to the ``audiokit::rows_times_half`` kernel (``kernels/cpu/half_weights.cpp``), which reads half
the bytes. Streaming therefore still equals offline within 1e-5, as for any compiled step (set the
precision before opening sessions: open ones keep the weights they prepared). Training mode prepares
float32 weights as before (an evaluation forward with autograd on rounds with an identity gradient);
biases, norms, the quantiser and blocks whose
offline forward does not multiply their prepared weights (LSTMs: ``rounds_to_half = False``) stay
float32.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch import nn

PRECISIONS = ("float32", "float16")
_FLAG = "_weight_precision"
_TWIN = "_audiokit_half_twin"


def set_weight_precision(model: nn.Module, precision: str) -> None:
    """Make every streaming block of ``model`` prepare its inference matrices in ``precision``
    (``"float32"``, the default, or ``"float16"``); prepared weights are made afresh at next use."""
    from audiokit.nn.streaming import StreamingModule

    if precision not in PRECISIONS:
        raise ValueError(f"weight precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    for module in model.modules():
        if isinstance(module, StreamingModule):
            module.__dict__[_FLAG] = precision
            module.__dict__.pop("_prepared", None)


def weight_precision(model: nn.Module) -> str:
    """``"float16"`` if any block of ``model`` prepares float16 weights, else ``"float32"``."""
    flagged = (m.__dict__.get(_FLAG, "float32") for m in model.modules())
    return "float16" if "float16" in flagged else "float32"


def precision_key(model: nn.Module) -> str:
    """Which blocks of ``model`` prepare float16 weights, as text (for the keys of compiled steps)."""
    return repr([name for name, m in model.named_modules() if m.__dict__.get(_FLAG) == "float16"])


def module_precision(module: nn.Module) -> str:
    """The precision ``module`` prepares its own weights in."""
    return module.__dict__.get(_FLAG, "float32")


def rounded_to_half(prepared: Any, keep_grad: bool = False) -> Any:
    """``prepared`` (tensors in tuples, lists, named tuples or dataclasses) with every floating matrix
    (2-D, both sides longer than 1: product matrices and depthwise taps, which offline and streaming
    arithmetic share; not biases, nor the 3-D conv weights only grouped and transposed convs' steps
    read) rounded to float16 values (still float32), each carrying its float16 twin; with
    ``keep_grad``, rounded with an identity gradient instead (the same values, no twin).

    Raises ``ValueError`` for a weight beyond float16's range (|w| > 65504)."""
    if isinstance(prepared, torch.Tensor):
        if not prepared.is_floating_point() or prepared.dim() != 2 or min(prepared.shape) < 2:
            return prepared
        rounded = prepared.detach().half().float()
        if not torch.isfinite(rounded).all():
            raise ValueError("float16 weights: a weight is beyond float16's range (|w| > 65504)")
        if keep_grad:  # exact: the rounding error of each weight is a float32 number
            return prepared + (rounded - prepared.detach())
        setattr(rounded, _TWIN, rounded.t().contiguous().half())
        return rounded
    if isinstance(prepared, tuple) and hasattr(prepared, "_fields"):
        return type(prepared)(*(rounded_to_half(v, keep_grad) for v in prepared))
    if isinstance(prepared, (tuple, list)):
        return type(prepared)(rounded_to_half(v, keep_grad) for v in prepared)
    if is_dataclass(prepared) and not isinstance(prepared, type):
        for field in fields(prepared):
            setattr(prepared, field.name, rounded_to_half(getattr(prepared, field.name), keep_grad))
    return prepared


def half_twin(matrix: torch.Tensor) -> torch.Tensor | None:
    """The ``(out, in)`` float16 copy of a prepared ``(in, out)`` matrix rounded by
    :func:`rounded_to_half` (``None`` for any other tensor)."""
    return getattr(matrix, _TWIN, None)
