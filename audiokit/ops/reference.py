"""Torch references of the fused ops: the definitions the kernels are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dwconv_layernorm_update(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """One streaming step of a causal depthwise conv followed by LayerNorm over channels.

    ``x``: the new frames ``(B, L, C)``; ``state``: the previous ``K - 1`` frames ``(B, K - 1, C)``
    (any strides), updated in place to the last ``K - 1`` frames of ``[state | x]``; ``weight``:
    ``(C, K)``; returns ``(B, L, C)`` with ``y[b, t] = LayerNorm(bias + sum_k weight[:, k] *
    z[b, t + k])``, ``z = [state | x]``.
    """
    z = torch.cat([state, x], 1)
    y = (z.unfold(1, weight.shape[1], 1) * weight).sum(-1)
    if bias is not None:
        y = y + bias
    state.copy_(z[:, x.shape[1] :])
    return F.layer_norm(y, (y.shape[-1],), norm_weight, norm_bias, eps)


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
    """One streaming step of a whole ConvNeXt block on time-major rows ``x (B, L, C)``:
    ``x + GELU(LayerNorm(dwconv(x)) @ w1 + b1) @ w2 + b2`` (layer scale folded into ``w2``, ``b2``).

    The conv and its in-place ``state`` update are :func:`dwconv_layernorm_update`'s (``taps (C, K)``);
    ``w1 (C, H)``, ``w2 (H, C)``: the linear layers' weights as ``(in, out)`` matrices.
    """
    y = dwconv_layernorm_update(x, state, taps, conv_bias, norm_weight, norm_bias, eps)
    hidden = F.gelu(F.linear(y, w1.t(), b1), approximate=approximate)
    return x + F.linear(hidden, w2.t(), b2)


def rvq_encode(
    rows: torch.Tensor,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor,
    codebooks: torch.Tensor,
    offsets: torch.Tensor,
    tables: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual vector quantisation of latent ``rows (N, D)`` through ``S`` stages, each a projection to
    its codebook's space, a Euclidean nearest-codeword search and the residual update.

    Per stage ``s``: ``z = residual @ proj_w[s] + proj_b[s]`` (float64; ``proj_w (S, D, d)``), the code
    ``argmin_k offsets[s, k] - 2 z . codebooks[s, k]`` (``codebooks (S, K, d)`` float64, ``offsets`` their
    squared norms ``(S, K)``; the first index on exact ties), and ``residual -= tables[s, code]``
    (``tables (S, K, D)`` float32: the codewords back in the latent space). Returns the codes ``(S, N)``
    int64 and the quantized rows ``(N, D)`` float32, the stages' table rows summed in order
    (:meth:`audiokit.quantize.rvq.ResidualVectorQuantizer.encode_rows` computes exactly this).
    """
    residual = rows.float()
    codes, quantized = [], torch.zeros_like(residual)
    for s in range(proj_w.shape[0]):
        z = torch.addmm(proj_b[s], residual.double(), proj_w[s])
        stage_codes = torch.addmm(offsets[s], z, codebooks[s].t(), alpha=-2.0).argmin(1)
        stage = tables[s].index_select(0, stage_codes)
        residual = residual - stage
        quantized = quantized + stage
        codes.append(stage_codes)
    return torch.stack(codes), quantized
