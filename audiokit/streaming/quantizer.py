"""Residual VQ lookups for streaming: the arithmetic of ``ResidualVectorQuantizer.encode`` / ``decode``,
with the per-stage constants (normalised codebooks, projections) prepared once.

Each stage runs the very operations of :class:`~audiokit.quantize.VectorQuantizer` on the same
tensors (1x1 conv projection, row normalisation, similarity matmul, argmax / argmin, embedding, 1x1
conv back), so a frame gets the codes the offline path gives it; the quantizer itself is stateless.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    if isinstance(module, nn.Identity):
        return None
    return module.weight.detach(), None if module.bias is None else module.bias.detach()


class QuantizerStep:
    """Stateless streaming twin of a :class:`~audiokit.quantize.ResidualVectorQuantizer`."""

    def __init__(self, quantizer) -> None:
        self.stages = []
        for vq in quantizer.quantizers:
            codebook = vq.codebook.detach()
            if vq.l2_normalize:
                search = F.normalize(codebook, dim=1)
            else:
                search = codebook.pow(2).sum(1)[None, :]
            self.stages.append(
                (_conv_params(vq.in_proj), _conv_params(vq.out_proj), codebook, search, vq.l2_normalize)
            )

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``(B, n_q, frames)`` int64 of ``latent (B, dim, frames)``."""
        residual = latent.float()
        codes = []
        batch, _, frames = latent.shape
        for stage in self.stages[:n_q]:
            project_in, project_out, codebook, search, l2 = stage
            z_e = residual if project_in is None else F.conv1d(residual, *project_in)
            flat = z_e.transpose(1, 2).reshape(-1, codebook.shape[1])
            if l2:
                stage_codes = (F.normalize(flat, dim=1) @ search.t()).argmax(1)
            else:
                stage_codes = (search - 2.0 * flat @ codebook.t()).argmin(1)
            stage_codes = stage_codes.view(batch, frames)
            residual = residual - self._stage_decode(stage_codes, codebook, project_out)
            codes.append(stage_codes)
        return torch.stack(codes, 1)

    @staticmethod
    def _stage_decode(codes: torch.Tensor, codebook: torch.Tensor, project_out) -> torch.Tensor:
        z_q = F.embedding(codes, codebook).transpose(1, 2).contiguous()
        return z_q if project_out is None else F.conv1d(z_q, *project_out)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, dim, frames)`` float32 of codes ``(B, n_q, frames)``."""
        quantized = None
        for i, (_, project_out, codebook, _, _) in enumerate(self.stages[: codes.shape[1]]):
            stage = self._stage_decode(codes[:, i], codebook, project_out)
            quantized = stage if quantized is None else quantized + stage
        return quantized
