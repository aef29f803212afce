"""Residual VQ lookups for streaming, on time-major latents, with per-stage tables prepared once.

Each stage of :class:`~audiokit.quantize.ResidualVectorQuantizer` projects the residual (1x1 conv),
picks the most similar codeword and subtracts the projected codeword. Streaming prepares per-stage
constants once: the transposed projection, the search matrix ``S^T`` (the codebook, row-normalised
when the quantizer is L2-normalised: normalising the query only scales a row of scores, which leaves
the argmax alone, so it is skipped) and the table of projected codewords ``out_proj(codebook)``. A
stage is then one ``addmm`` (projection), one ``mm`` / ``addmm`` (scores), one ``argmax``, one table
lookup and one subtraction.
The scores differ from the offline ones by float rounding (~1e-7 relative), so a code could only
differ where two codewords are that close to a tie; the property tests compare codes exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _affine(module: nn.Module, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (out, in), b (out,))`` of a 1x1 conv (identity when ``module`` is ``nn.Identity``), float64."""
    if isinstance(module, nn.Identity):
        weight = torch.eye(dim, dtype=torch.float64, device=device)
    else:
        weight = module.weight.detach().double()[..., 0]
    if getattr(module, "bias", None) is None:
        return weight, torch.zeros(weight.shape[0], dtype=torch.float64, device=device)
    return weight, module.bias.detach().double()


class QuantizerStep:
    """Stateless streaming twin of a :class:`~audiokit.quantize.ResidualVectorQuantizer`.

    Latents are time-major rows ``(N, dim)`` (``N`` = streams x frames).
    """

    def __init__(self, quantizer) -> None:
        self.stages: list[tuple] = []
        self.dim: int = quantizer.dim
        for vq in quantizer.quantizers:
            codebook = vq.codebook.detach().double()
            w_in, b_in = _affine(vq.in_proj, codebook.shape[1], codebook.device)
            w_out, b_out = _affine(vq.out_proj, codebook.shape[1], codebook.device)
            if vq.l2_normalize:
                search, offset = F.normalize(codebook, dim=1).t(), None
            else:  # argmin |c|^2 - 2 z.c == argmax 2 z.c - |c|^2
                search, offset = 2.0 * codebook.t(), -codebook.pow(2).sum(1).float()
            table = codebook @ w_out.t() + b_out  # (K, dim): projected codewords
            project = (w_in.t().float().contiguous(), b_in.float())
            self.stages.append((project, search.float().contiguous(), offset, table.float().contiguous()))

    def encode_rows(
        self, latent: torch.Tensor, n_q: int, quantize: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``(n_q, N)`` int64 of latent rows ``(N, dim)`` and, with ``quantize``, their quantized
        rows ``(N, dim)`` (what :meth:`decode_rows` gives for those codes, summed in the same order)."""
        residual = latent.float()
        codes = []
        quantized = None
        for (w_in, b_in), search, offset, table in self.stages[:n_q]:
            z_e = torch.addmm(b_in, residual, w_in)
            scores = torch.mm(z_e, search) if offset is None else torch.addmm(offset, z_e, search)
            stage_codes = scores.argmax(1)
            stage = table.index_select(0, stage_codes)
            residual = residual - stage
            if quantize:
                quantized = stage if quantized is None else quantized + stage
            codes.append(stage_codes)
        return torch.stack(codes), quantized

    def decode_rows(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent rows ``(N, dim)`` float32 of codes ``(n_q, N)``."""
        quantized = None
        for (_, _, _, table), stage_codes in zip(self.stages, codes, strict=False):
            stage = table.index_select(0, stage_codes)
            quantized = stage if quantized is None else quantized + stage
        return quantized

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``(B, n_q, frames)`` int64 of ``latent (B, dim, frames)``."""
        batch, dim, frames = latent.shape
        codes, _ = self.encode_rows(latent.transpose(1, 2).reshape(-1, dim), n_q)
        return codes.view(n_q, batch, frames).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, dim, frames)`` float32 of codes ``(B, n_q, frames)``."""
        batch, n_q, frames = codes.shape
        rows = self.decode_rows(codes.transpose(0, 1).reshape(n_q, -1))
        return rows.view(batch, frames, -1).transpose(1, 2)
