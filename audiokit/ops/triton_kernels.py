"""Triton versions of the fused ops (GPU; on the CPU only under ``TRITON_INTERPRET=1``, for tests).

The kernel bodies are plain functions, compiled with ``triton.jit`` on first use, so that the
interpreter setting in force at that moment is the one that counts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from audiokit.errors import ModelError


def _dwconv_layernorm_update(
    x_ptr, state_ptr, w_ptr, b_ptr, nw_ptr, nb_ptr, y_ptr,
    length, channels, eps,
    sxb, sxt, sxc, ssb, sst, ssc, syb, syt, syc,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One program per stream: every new frame's conv + LayerNorm, then the state shift, in order."""
    b = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < channels
    taps = tl.arange(0, BLOCK_K)
    kmask = taps < K
    tile_mask = kmask[:, None] & cmask[None, :]
    w = tl.load(w_ptr + cols[None, :] * K + taps[:, None], mask=tile_mask, other=0.0)  # (BLOCK_K, BLOCK_C)
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0)
    else:
        bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    norm_w = tl.load(nw_ptr + cols, mask=cmask, other=0.0)
    norm_b = tl.load(nb_ptr + cols, mask=cmask, other=0.0)
    history = K - 1
    for t in range(0, length):
        rows = t + taps  # rows of z = [state | x]
        in_state = rows < history
        old = tl.load(
            state_ptr + b * ssb + rows[:, None] * sst + cols[None, :] * ssc,
            mask=tile_mask & in_state[:, None],
            other=0.0,
        )
        new = tl.load(
            x_ptr + b * sxb + (rows - history)[:, None] * sxt + cols[None, :] * sxc,
            mask=tile_mask & (rows >= history)[:, None],
            other=0.0,
        )
        acc = tl.sum((old + new) * w, axis=0) + bias
        mean = tl.sum(tl.where(cmask, acc, 0.0), axis=0) / channels
        centred = tl.where(cmask, acc - mean, 0.0)
        variance = tl.sum(centred * centred, axis=0) / channels
        y = centred / tl.sqrt(variance + eps) * norm_w + norm_b
        tl.store(y_ptr + b * syb + t * syt + cols * syc, y, mask=cmask)
    # new state row i = z[length + i]. Threads share the rows: none may store before every thread
    # has read the old state, in the loop above and just below
    tl.debug_barrier()
    rows = length + taps
    keep = tile_mask & (taps < history)[:, None]
    old = tl.load(
        state_ptr + b * ssb + rows[:, None] * sst + cols[None, :] * ssc,
        mask=keep & (rows < history)[:, None],
        other=0.0,
    )
    new = tl.load(
        x_ptr + b * sxb + (rows - history)[:, None] * sxt + cols[None, :] * sxc,
        mask=keep & (rows >= history)[:, None],
        other=0.0,
    )
    shifted = old + new
    tl.debug_barrier()
    tl.store(state_ptr + b * ssb + taps[:, None] * sst + cols[None, :] * ssc, shifted, mask=keep)


_COMPILED: dict[bool, object] = {}


def _kernel():
    interpret = bool(triton.knobs.runtime.interpret)
    if interpret not in _COMPILED:
        _COMPILED[interpret] = triton.jit(_dwconv_layernorm_update)
    return _COMPILED[interpret]


def dwconv_layernorm_update(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """:func:`audiokit.ops.reference.dwconv_layernorm_update` as one Triton kernel (float32)."""
    batch, length, channels = x.shape
    taps = weight.shape[1]
    if x.dtype != torch.float32 or state.shape != (batch, taps - 1, channels):
        raise ModelError(
            f"dwconv_layernorm_update: float32 x (B, L, C) and state (B, K - 1, C) needed, got {x.dtype} "
            f"{tuple(x.shape)} and {tuple(state.shape)}"
        )
    weight = weight.contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    _kernel()[(batch,)](
        x, state, weight, bias if bias is not None else weight, norm_weight, norm_bias, y,
        length, channels, eps,
        *x.stride(), *state.stride(), *y.stride(),
        K=taps, HAS_BIAS=bias is not None,
        BLOCK_K=triton.next_power_of_2(taps), BLOCK_C=triton.next_power_of_2(channels),
    )  # fmt: skip
    return y
