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


def _mlp_residual(
    y_ptr, x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
    rows, channels, hidden,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, TANH: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One program per ``BLOCK_M`` rows (contiguous ``(rows, C)``): ``x + GELU(y @ w1 + b1) @ w2 + b2``,
    the hidden activations ``BLOCK_H`` columns at a time, never stored."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    tile_mask = (m < rows)[:, None] & (cols < channels)[None, :]
    y = tl.load(y_ptr + m[:, None] * channels + cols[None, :], mask=tile_mask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for start in range(0, hidden, BLOCK_H):
        hs = start + tl.arange(0, BLOCK_H)
        w_mask = (cols < channels)[:, None] & (hs < hidden)[None, :]
        w1 = tl.load(w1_ptr + cols[:, None] * hidden + hs[None, :], mask=w_mask, other=0.0)
        h = tl.dot(y, w1, input_precision="ieee")
        if HAS_B1:
            h += tl.load(b1_ptr + hs, mask=hs < hidden, other=0.0)[None, :]
        if TANH:  # tanh(u) = 2 sigmoid(2u) - 1
            inner = 2.0 * tl.sigmoid(1.5957691216057308 * (h + 0.044715 * h * h * h)) - 1.0
        else:
            inner = tl.math.erf(h * 0.7071067811865476)
        h = 0.5 * h * (1.0 + inner)
        w2 = tl.load(w2_ptr + hs[:, None] * channels + cols[None, :], mask=tl.trans(w_mask), other=0.0)
        acc += tl.dot(h, w2, input_precision="ieee")
    if HAS_B2:
        acc += tl.load(b2_ptr + cols, mask=cols < channels, other=0.0)[None, :]
    acc += tl.load(x_ptr + m[:, None] * channels + cols[None, :], mask=tile_mask, other=0.0)
    tl.store(out_ptr + m[:, None] * channels + cols[None, :], acc, mask=tile_mask)


def _rvq_encode(
    rows_ptr, w_ptr, b_ptr, c_ptr, o_ptr, t_ptr, codes_ptr, q_ptr,
    n, dim, d, k, stages,
    BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One program per latent row, every stage in turn: the float64 projection, the float64 scores of
    every codeword, their argmin (the lower index on ties), the float32 residual update."""
    row = tl.program_id(0)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims < dim
    proj = tl.arange(0, BLOCK_P)
    pmask = proj < d
    words = tl.arange(0, BLOCK_K)
    kmask = words < k
    residual = tl.load(rows_ptr + row * dim + dims, mask=dmask, other=0.0)
    quantized = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for s in range(0, stages):
        w = tl.load(
            w_ptr + s * dim * d + dims[:, None] * d + proj[None, :],
            mask=dmask[:, None] & pmask[None, :],
            other=0.0,
        )  # (BLOCK_D, BLOCK_P) float64
        z = tl.sum(residual.to(tl.float64)[:, None] * w, axis=0)
        z += tl.load(b_ptr + s * d + proj, mask=pmask, other=0.0)
        c = tl.load(
            c_ptr + s * k * d + words[:, None] * d + proj[None, :],
            mask=kmask[:, None] & pmask[None, :],
            other=0.0,
        )  # (BLOCK_K, BLOCK_P) float64
        score = tl.load(o_ptr + s * k + words, mask=kmask, other=0.0) - 2.0 * tl.sum(c * z[None, :], axis=1)
        score = tl.where(kmask, score, float("inf"))
        code = tl.argmin(score, axis=0, tie_break_left=True)
        tl.store(codes_ptr + s * n + row, code.to(tl.int64))
        stage = tl.load(t_ptr + (s * k + code) * dim + dims, mask=dmask, other=0.0)
        residual -= stage
        quantized += stage
    tl.store(q_ptr + row * dim + dims, quantized, mask=dmask)


_BODIES = {
    "dwconv_layernorm_update": _dwconv_layernorm_update,
    "mlp_residual": _mlp_residual,
    "rvq_encode": _rvq_encode,
}
_COMPILED: dict[tuple[str, bool], object] = {}


def _kernel(name: str = "dwconv_layernorm_update"):
    """The kernel ``name`` jitted for the interpreter setting in force now."""
    key = (name, bool(triton.knobs.runtime.interpret))
    if key not in _COMPILED:
        _COMPILED[key] = triton.jit(_BODIES[name])
    return _COMPILED[key]


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
    """:func:`audiokit.ops.reference.convnext_block_step` as two Triton kernels (float32): the conv +
    LayerNorm + state update per stream, then the MLP, GELU, bias and residual per block of rows, the
    hidden activations kept on chip."""
    if approximate not in ("none", "tanh"):
        raise ModelError(f"convnext_block_step: approximate must be 'none' or 'tanh', got {approximate!r}")
    normed = dwconv_layernorm_update(x, state, taps, conv_bias, norm_weight, norm_bias, eps)
    batch, length, channels = x.shape
    rows, hidden = batch * length, w1.shape[1]
    xc = x.contiguous()
    out = torch.empty_like(xc)
    w1, w2, block_m = w1.contiguous(), w2.contiguous(), 16
    _kernel("mlp_residual")[(triton.cdiv(rows, block_m),)](
        normed, xc, w1, b1 if b1 is not None else w1, w2, b2 if b2 is not None else w2, out,
        rows, channels, hidden,
        HAS_B1=b1 is not None, HAS_B2=b2 is not None, TANH=approximate == "tanh", BLOCK_M=block_m,
        **mlp_tiles(channels),
    )  # fmt: skip
    return out


def mlp_tiles(channels: int) -> dict[str, int]:
    """The MLP kernel's tiles for ``channels`` and how many of them are in flight (``num_stages``): the
    rows tile and the pipelined weight tiles live in shared memory, which must hold them (H100: 227 KiB).
    Up to 256 channels 32 hidden columns a tile, pipelined as Triton does by default (146 KiB at 256);
    wider blocks 16 columns, unpipelined (129 KiB at 1024 channels, against 578 KiB with the defaults)."""
    block_c = max(16, triton.next_power_of_2(channels))
    if block_c <= 256:
        return {"BLOCK_C": block_c, "BLOCK_H": 32, "num_stages": 3}
    return {"BLOCK_C": block_c, "BLOCK_H": 16, "num_stages": 1}


def rvq_encode(
    rows: torch.Tensor,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor,
    codebooks: torch.Tensor,
    offsets: torch.Tensor,
    tables: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`audiokit.ops.reference.rvq_encode` as one Triton kernel, one program per row."""
    n, dim = rows.shape
    stages, k, d = codebooks.shape
    if rows.dtype != torch.float32 or proj_w.dtype != torch.float64 or tables.dtype != torch.float32:
        raise ModelError("rvq_encode: float32 rows and tables, float64 projections and codebooks needed")
    codes = torch.empty(stages, n, dtype=torch.int64, device=rows.device)
    quantized = torch.empty(n, dim, dtype=torch.float32, device=rows.device)
    if n:
        _kernel("rvq_encode")[(n,)](
            rows.contiguous(), proj_w.contiguous(), proj_b.contiguous(), codebooks.contiguous(),
            offsets.contiguous(), tables.contiguous(), codes, quantized,
            n, dim, d, k, stages,
            BLOCK_D=triton.next_power_of_2(dim), BLOCK_P=max(2, triton.next_power_of_2(d)),
            BLOCK_K=triton.next_power_of_2(k),
        )  # fmt: skip
    return codes, quantized
