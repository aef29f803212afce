"""The streaming contract of the :mod:`audiokit.nn` blocks, and the row arithmetic they share offline.

A block that streams is an ordinary ``nn.Module`` that also inherits :class:`StreamingModule`:
:meth:`~StreamingModule.init_state` makes its typed state (:mod:`audiokit.nn.state`) for a batch of
streams, and :meth:`~StreamingModule.step` maps the next chunk ``(B, C, n)`` to the next output chunk,
updating the state. Inside a model step activations are time-major ``(B, n, C)``
(:meth:`~StreamingModule.step_t`): a conv is then one ``unfold`` and one matrix product, and Linear /
LayerNorm layers need no transposes. Each block implements ``step`` or ``step_t`` (the other
transposes). Composite blocks step their children; dispatch is by method, so subclasses stream too.

Chunk rules (they make streaming equal offline, see :mod:`audiokit.nn.conv`): a conv of stride ``s``
must receive a multiple of ``s`` samples, except in the ``final`` step, where it pads its input with
``(-n) % s`` zeros exactly as the offline forward pads the end of the signal. A causal transposed conv
or iSTFT head maps ``n`` frames to ``n * stride`` final samples and carries the rest as overlap.

Identical codes. Streamed codes must equal offline codes bit for bit, so in evaluation mode a block's
``forward`` runs the arithmetic of its ``step`` (the same prepared matrices, the same order of sums),
and every row's result must not depend on how many rows are computed together
(:func:`matmul_rows`). Decoders too: the shipped decoder turns a one-ulp difference in a matrix
product into ~1e-5 of audio, so rows rounded differently would break the 1e-5 promise.

Prepared weights. Blocks multiply with matrices prepared from their weights (weight norm evaluated,
transposed into contiguous ``(in, out)`` matrices, taps reordered, layer scale folded).
:meth:`StreamingModule.init_state` prepares them and the steps use them: a step uses the weights as
they were at the latest ``init_state`` (a streaming session reads the weights when it is created).
They are kept while the parameters' version counters and storage, and the forced kernel backend
(:func:`audiokit.ops.use_backend`), say they have not changed (prepared
again after an optimiser step, ``load_state_dict`` or ``.to(...)``; edits through ``.data``, which
the counters miss, need ``weights_changed()``): a new session and an evaluation ``forward`` reuse
them; with autograd recording ``forward`` prepares them afresh, with gradients. A model set to float16 weights
(:func:`audiokit.nn.precision.set_weight_precision`) prepares them rounded to float16 values.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audiokit import ops
from audiokit.errors import ModelError
from audiokit.nn.precision import Int8Matrix, module_precision, rounded_weights, weight_twin
from audiokit.nn.state import StateList, StreamState

# torch modules that act on each value on its own: they stream as they are, in any layout
ELEMENTWISE = (nn.ELU, nn.GELU, nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Identity)


class StreamingModule:
    """Mixin of the ``nn.Module`` blocks that also run chunk by chunk with an explicit state."""

    rounds_weights = True
    """Whether float16 or int8 weights (:mod:`audiokit.nn.precision`) round this block's prepared matrices:
    ``False`` for blocks whose offline ``forward`` does not multiply its prepared weights."""

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StreamState | None:
        """The state before the first sample of ``batch_size`` streams (all zeros); ``None`` if stateless.

        Also prepares the weights the steps use (see the module docstring).
        """
        return None

    def step(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """Output for the next chunk ``x (B, C, n)``; updates ``state`` (reassigns its tensors).

        ``final=True`` marks the last chunk of the streams (it may be shorter than a stride).
        """
        return self.step_t(x.transpose(1, 2), state, final).transpose(1, 2)

    def step_t(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """:meth:`step` on time-major ``x (B, n, C)``, returning time-major output."""
        return self.step(x.transpose(1, 2), state, final).transpose(1, 2)

    def prepared(self) -> Any:
        """The weights prepared by the latest :meth:`init_state` (prepared now if there was none)."""
        cached = self.__dict__.get("_prepared")
        return self.prepare() if cached is None else cached[1]

    def prepare(self) -> Any:
        """Prepare (and keep for the steps) what the steps multiply with; the kept ones while the
        parameters have not changed since (their version counters and storage, as the quantizer's
        tables), so that a session per file of a folder run does not prepare them all again (a
        sixth of a folder of short clips' encode or decode). Never kept for inference tensors, which
        have no version counter."""
        cached = self.__dict__.get("_prepared")
        if cached is not None and cached[0] == self._weights_key():
            if not any(t.is_inference() for t in self.parameters()):
                return cached[1]
        with torch.inference_mode(False), torch.no_grad():
            weights = self.prepare_weights()
            if precision := self._rounding():
                weights = rounded_weights(weights, precision)
        self.__dict__["_prepared"] = (self._weights_key(), weights)
        return weights

    def current_weights(self) -> Any:
        """What an offline forward multiplies with: the kept weights while the parameters have not
        changed, prepared afresh (with gradients) when autograd records (rounded with an identity gradient
        in evaluation mode, for a model set to float16 or int8 weights)."""
        if torch.is_grad_enabled():
            weights = self.prepare_weights()
            precision = self._rounding()
            return rounded_weights(weights, precision, keep_grad=True) if precision else weights
        cached = self.__dict__.get("_prepared")
        if cached is None or cached[0] != self._weights_key():
            return self.prepare()
        return cached[1]

    def prepare_weights(self) -> Any:
        """What the steps multiply with, made from the current weights (override; default nothing)."""
        return None

    def _rounding(self) -> str | None:
        """The precision prepared weights are rounded to (``None``: not rounded): a float16 or int8
        model's, in evaluation mode."""
        precision = module_precision(self)
        rounds = self.rounds_weights and not self.training and precision != "float32"
        return precision if rounds else None

    def _weights_key(self) -> tuple[str | None, str | None, list[tuple[int, int]]]:
        # inference tensors have no version counter; they change only inside inference mode. The forced
        # backend is part of the key: blocks pick their kernels when they prepare (use_backend's contract)
        versions = [(t.data_ptr(), 0 if t.is_inference() else t._version) for t in self.parameters()]
        return self._rounding(), ops.forced_backend(), versions


def stream_init(module: nn.Module, batch_size: int, device: torch.device, dtype: torch.dtype, name: str):
    """``module.init_state(...)``; a stateless elementwise torch module has state ``None``.

    Raises :class:`ModelError` (naming ``name``) for a module without a streaming step.
    """
    if isinstance(module, StreamingModule):
        return module.init_state(batch_size, device, dtype)
    if isinstance(module, ELEMENTWISE):
        return None
    raise ModelError(f"cannot stream {name}: {type(module).__name__} has no streaming step")


def stream_step_t(module: nn.Module, x: torch.Tensor, state: StreamState | None, final: bool) -> torch.Tensor:
    """``module.step_t(...)``, or the module itself for an elementwise torch module."""
    if isinstance(module, StreamingModule):
        return module.step_t(x, state, final)
    return module(x)


class StreamingSequential(nn.Sequential, StreamingModule):
    """``nn.Sequential`` whose steps run its children's steps in order; state: a :class:`StateList`."""

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return StateList(
            [stream_init(m, batch_size, device, dtype, f"layer {i}") for i, m in enumerate(self)]
        )

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        for module, child in zip(self, state.children, strict=True):
            x = stream_step_t(module, x, child, final)
        return x


def require_causal(module: nn.Module) -> None:
    """Raise :class:`ModelError` unless ``module`` (a conv) is causal: a non-causal one reads the future."""
    if not module.causal:
        raise ModelError(
            f"cannot stream a non-causal {type(module).__name__} reading {module.lookahead} future "
            "samples; build the model with causal=True to stream it"
        )


def stride_padding(length: int, stride: int, final: bool, what: str) -> int:
    """Zeros to append to a chunk of ``length`` samples: ``(-length) % stride``, only in a ``final`` step."""
    extra = (-length) % stride
    if extra and not final:
        raise ValueError(
            f"a streaming chunk of {length} samples is not a multiple of the {what} {stride} "
            "(only the final chunk may be)"
        )
    return extra


LinearWeights = tuple[torch.Tensor, torch.Tensor | None]  # (W^T (in, out) contiguous, bias (out,))

# inputs summed per matrix product: MKL sums more inputs than this (769+ where this was written) in
# another order when it multiplies a few rows than when it multiplies many
PIECE_INPUTS = 768
# fewest rows given to BLAS at once: it multiplies fewer by other routes (one row as a matrix-vector
# product everywhere; 2-3 rows on an AMD EPYC with MKL too), rounding them differently
MIN_ROWS = 4


def matmul_rows(
    rows: torch.Tensor,
    matrix: torch.Tensor,
    bias: torch.Tensor | None = None,
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """``rows (N, in) @ matrix (in, out)`` plus ``bias``, or added to ``into`` (in place without grad).

    Each row is rounded the same whatever ``N`` (on one thread), for a contiguous ``matrix`` (BLAS
    rounds a transposed one differently for many rows): fewer than :data:`MIN_ROWS` rows are computed
    as that many, and the inputs are summed in pieces of at most :data:`PIECE_INPUTS`, accumulated in
    order. The C++ ConvNeXt step (``kernels/cpu``) follows the same two rules; compiled steps
    (:mod:`audiokit.streaming.compiled`) leave the row count to the compiler, and multiply a matrix
    with float16 or int8-grid values (:mod:`audiokit.nn.precision`) by its compact twin in a C++
    kernel.
    """
    count = rows.shape[0]
    twin = weight_twin(matrix)
    if twin is not None and into is None and rows.device.type == "cpu" and torch.compiler.is_compiling():
        if isinstance(twin, Int8Matrix):
            return torch.ops.audiokit.rows_times_int8(rows, twin.values, twin.scales, bias)
        return torch.ops.audiokit.rows_times_half(rows, twin, bias)
    if not torch.compiler.is_compiling() and 0 < count < MIN_ROWS:  # (compiled: the count is symbolic)
        filler = (MIN_ROWS - count, -1)
        rows = torch.cat([rows, rows[:1].expand(filler)])
        padded = None if into is None else torch.cat([into, into[:1].expand(filler)])
        y = _summed_in_pieces(rows, matrix, bias, padded)[:count]
        if into is None or torch.is_grad_enabled():
            return y
        return into.copy_(y)
    return _summed_in_pieces(rows, matrix, bias, into)


def _summed_in_pieces(
    rows: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None, into: torch.Tensor | None
) -> torch.Tensor:
    y = into
    for start in range(0, rows.shape[1], PIECE_INPUTS):
        part, weights = rows[:, start : start + PIECE_INPUTS], matrix[start : start + PIECE_INPUTS]
        if y is None:
            y = torch.mm(part, weights) if bias is None else torch.addmm(bias, part, weights)
        elif torch.is_grad_enabled():
            y = torch.addmm(y, part, weights)
        else:
            y = y.addmm_(part, weights)
    return y


def linear_weights(layer: nn.Linear, scale: torch.Tensor | None = None) -> LinearWeights:
    """``(W^T, bias)`` of ``layer`` for :func:`linear_t`, both multiplied by ``scale (out,)`` if given."""
    matrix, bias = layer.weight.t(), layer.bias
    if scale is not None:
        matrix, bias = matrix * scale, None if bias is None else bias * scale
    return matrix.contiguous(), bias


def linear_t(x: torch.Tensor, weights: LinearWeights) -> torch.Tensor:
    """A linear layer (:func:`linear_weights`) on the last axis of ``x (..., in)``, as one product of its
    rows (:func:`matmul_rows`)."""
    matrix, bias = weights
    return matmul_rows(x.reshape(-1, x.shape[-1]), matrix, bias).view(*x.shape[:-1], matrix.shape[1])


def layer_norm_t(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` over the last axis of time-major ``x``."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
