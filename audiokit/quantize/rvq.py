"""Residual vector quantizer with quantizer dropout, and the bitrate <-> codebook-count mapping.

Shapes: latents ``[batch, dim, frames]`` float; codes ``[batch, n_q, frames]`` int64. Stage ``i``
quantizes what stages ``0..i-1`` left over, so decoding any prefix of the codebooks gives a coarser
reconstruction and one model serves every bitrate ``frame_rate * log2(codebook_size) * n_q``.

Coding (:meth:`ResidualVectorQuantizer.encode_rows` / :meth:`~ResidualVectorQuantizer.decode_rows`) works
on latent rows ``(N, dim)`` with per-stage tables from :meth:`~ResidualVectorQuantizer.prepare_lookup`;
offline :meth:`~ResidualVectorQuantizer.encode` / :meth:`~ResidualVectorQuantizer.decode` and the
streaming sessions both call them, so a row gets the same codes either way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from audiokit import ops
from audiokit.errors import UsageError
from audiokit.quantize.lookup import StageLookup, StageLookups
from audiokit.quantize.vq import VectorQuantizer


@dataclass
class QuantizedResult:
    """Output of :meth:`ResidualVectorQuantizer.forward`.

    ``quantized`` ``[B, dim, frames]`` float32 with a straight-through gradient; ``codes``
    ``[B, n_q, frames]`` int64 (every stage, also those quantizer dropout left out of an item's
    ``quantized``); ``commitment_loss`` and ``codebook_loss`` are scalars summed over the
    stages (each stage averaged over the items that used it); ``metrics`` holds ``perplexity``,
    ``usage``, ``restarted`` and ``duplicates`` tensors ``[n_q]`` (one value per codebook, measured on
    this batch; see :class:`~audiokit.quantize.vq.VQOutput`); ``stages`` ``[B]`` int64: how many stages
    each item's ``quantized`` sums (fewer than ``n_q`` where dropout left some out).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    stages: torch.Tensor | None = None


def bits_per_code(codebook_size: int) -> float:
    """Bits carried by one code of a ``codebook_size``-entry codebook (``log2``)."""
    return math.log2(codebook_size)


def supported_bitrates(frame_rate: float, codebook_size: int, num_quantizers: int) -> list[float]:
    """Bitrates in bits/s reachable with 1..``num_quantizers`` codebooks at ``frame_rate`` Hz."""
    step = float(frame_rate) * bits_per_code(codebook_size)
    return [step * n for n in range(1, num_quantizers + 1)]


def num_quantizers_for_bitrate(
    bitrate: float, frame_rate: float, codebook_size: int, num_quantizers: int
) -> int:
    """Number of codebooks ``floor(bitrate / (frame_rate * log2(codebook_size)))`` for ``bitrate`` bits/s.

    Raises :class:`UsageError` (listing the supported bitrates) when that is below 1 or above
    ``num_quantizers``, and when ``bitrate`` is not a number (a string, a bool).
    """
    if isinstance(bitrate, bool) or not isinstance(bitrate, numbers.Real):
        raise UsageError(f"bitrate must be a number of bits per second, got {bitrate!r}")
    step = float(frame_rate) * bits_per_code(codebook_size)
    n_q = math.floor(float(bitrate) / step + 1e-9) if math.isfinite(float(bitrate)) else 0
    if not 1 <= n_q <= num_quantizers:
        rates = supported_bitrates(frame_rate, codebook_size, num_quantizers)
        listed = ", ".join(f"{rate:g}" for rate in rates)
        raise UsageError(
            f"bitrate {float(bitrate):g} b/s is not supported: choose one of {listed} b/s "
            f"({num_quantizers} codebooks of {codebook_size} entries at {float(frame_rate):g} Hz)"
        )
    return n_q


class ResidualVectorQuantizer(nn.Module):
    """Stack of :class:`VectorQuantizer` stages applied to successive residuals.

    Args:
        dim: latent channels.
        num_quantizers: maximum number of stages (codebooks).
        codebook_size: codewords per stage.
        codebook_dim, l2_normalize, ema, decay, kmeans_init, kmeans_iters, dead_code_threshold,
            duplicate_cosine, duplicate_distance: passed to every :class:`VectorQuantizer` stage.
        quantizer_dropout: in training, the probability that a batch item uses a random number of
            stages drawn uniformly from ``1..n_q`` instead of ``n_q`` (DAC). Never applied in eval mode
            nor in :meth:`encode`, so inference is deterministic.
        dropout_choices: the stage counts that dropout draws from, uniformly (``None``: every count
            ``1..n_q``); counts above a call's ``n_q`` are left out of that call's draw (when none is left,
            ``1..n_q``). A codec that ships a few bitrates trains its decoder on them, e.g. ``(3, 6)``
            beside the full 12.
    """

    def __init__(
        self,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        ema: bool = True,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.1,
        quantizer_dropout: float = 0.0,
        duplicate_cosine: float = 0.0,
        duplicate_distance: float = 0.0,
        dropout_choices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be at least 1, got {num_quantizers}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        if dropout_choices is not None and (
            not dropout_choices or any(not 1 <= int(n) <= num_quantizers for n in dropout_choices)
        ):
            raise ValueError(
                f"dropout_choices must be stage counts in [1, {num_quantizers}], got {dropout_choices}"
            )
        self.quantizer_dropout = quantizer_dropout
        self.dropout_choices = None if dropout_choices is None else sorted({int(n) for n in dropout_choices})
        self.quantizers = nn.ModuleList(
            VectorQuantizer(
                dim,
                codebook_size,
                codebook_dim=codebook_dim,
                l2_normalize=l2_normalize,
                ema=ema,
                decay=decay,
                kmeans_init=kmeans_init,
                kmeans_iters=kmeans_iters,
                dead_code_threshold=dead_code_threshold,
                duplicate_cosine=duplicate_cosine,
                duplicate_distance=duplicate_distance,
            )
            for _ in range(num_quantizers)
        )

    def _check_n_q(self, n_q: int | None) -> int:
        n_q = self.num_quantizers if n_q is None else int(n_q)
        if not 1 <= n_q <= self.num_quantizers:
            raise ValueError(f"n_q must be in [1, {self.num_quantizers}], got {n_q}")
        return n_q

    def n_q_for_bitrate(self, bitrate: float, frame_rate: float) -> int:
        """Codebooks for ``bitrate`` bits/s at ``frame_rate`` Hz (see :func:`num_quantizers_for_bitrate`)."""
        return num_quantizers_for_bitrate(bitrate, frame_rate, self.codebook_size, self.num_quantizers)

    def _draw_n_q(self, n_q: int, batch: int, device: torch.device) -> torch.Tensor:
        """``batch`` stage counts drawn uniformly from :attr:`dropout_choices` up to ``n_q`` (or 1..n_q)."""
        choices = [n for n in self.dropout_choices or () if n <= n_q]
        if not choices:
            return torch.randint(1, n_q + 1, (batch,), device=device)
        index = torch.randint(0, len(choices), (batch,), device=device)
        return torch.tensor(choices, device=device)[index]

    def forward(self, z: torch.Tensor, n_q: int | None = None) -> QuantizedResult:
        """Quantize ``z [B, dim, frames]`` with ``n_q`` stages (all when ``None``); in training mode,
        updates the codebooks and applies quantizer dropout."""
        n_q = self._check_n_q(n_q)
        batch = z.shape[0]
        item_n_q = None
        if self.training and self.quantizer_dropout > 0:
            item_n_q = torch.full((batch,), n_q, device=z.device)
            dropped = torch.rand(batch, device=z.device) < self.quantizer_dropout
            item_n_q = torch.where(dropped, self._draw_n_q(n_q, batch, z.device), item_n_q)
        residual = z.float()
        quantized = torch.zeros_like(residual)
        codes, perplexity, usage, restarted, duplicates = [], [], [], [], []
        commitment_loss = residual.new_zeros(())
        codebook_loss = residual.new_zeros(())
        for i, quantizer in enumerate(self.quantizers[:n_q]):
            mask = None if item_n_q is None else item_n_q > i
            out = quantizer(residual, mask)
            stage = out.quantized if mask is None else out.quantized * mask[:, None, None]
            quantized = quantized + stage
            residual = residual - out.quantized
            codes.append(out.codes)
            commitment_loss = commitment_loss + out.commitment_loss
            codebook_loss = codebook_loss + out.codebook_loss
            perplexity.append(out.perplexity)
            usage.append(out.usage)
            restarted.append(out.restarted)
            duplicates.append(out.duplicates)
        return QuantizedResult(
            quantized=quantized,
            codes=torch.stack(codes, 1),
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            metrics={
                "perplexity": torch.stack(perplexity),
                "usage": torch.stack(usage),
                "restarted": torch.stack(restarted),
                "duplicates": torch.stack(duplicates),
            },
            stages=torch.full((batch,), n_q, device=z.device) if item_n_q is None else item_n_q,
        )

    def prepare_lookup(self, n_q: int | None = None) -> StageLookups:
        """The coding tables (:meth:`VectorQuantizer.prepare_lookup`) of the first ``n_q`` stages (all when
        ``None``), from the current weights, and the backend that runs them (chosen now)."""
        return StageLookups([quantizer.prepare_lookup() for quantizer in self.quantizers[:n_q]])

    def encode_rows(
        self,
        rows: torch.Tensor,
        n_q: int,
        lookups: list[StageLookup] | None = None,
        quantize: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``(n_q, N)`` int64 of latent rows ``(N, dim)`` and, with ``quantize``, their quantized rows
        ``(N, dim)`` float32 (what :meth:`decode_rows` gives for those codes, summed in the same order).

        ``lookups``: from :meth:`prepare_lookup` (prepared now when ``None``); prepared for the ``cpp``
        backend, all stages run in :func:`audiokit.ops.rvq_encode` (the same codes and rows).
        """
        lookups = self.prepare_lookup(n_q) if lookups is None else lookups
        residual = rows.detach().float()
        stacked = getattr(lookups, "stacked", None) if getattr(lookups, "backend", None) == "cpp" else None
        if stacked is not None and residual.device.type == "cpu":  # every stage in one kernel call
            codes, quantized = ops.rvq_encode(residual.contiguous(), *(part[:n_q] for part in stacked))
            return codes, quantized if quantize else None
        codes, quantized = [], None
        for lookup in lookups[:n_q]:
            stage_codes = lookup.codes(residual)
            stage = lookup.table.index_select(0, stage_codes)
            residual = residual - stage
            if quantize:
                quantized = stage if quantized is None else quantized + stage
            codes.append(stage_codes)
        return torch.stack(codes), quantized

    def decode_rows(self, codes: torch.Tensor, lookups: list[StageLookup] | None = None) -> torch.Tensor:
        """Latent rows ``(N, dim)`` float32 of codes ``(n_q, N)``: the sum of the stages' table rows."""
        lookups = self.prepare_lookup(codes.shape[0]) if lookups is None else lookups
        quantized = None
        for lookup, stage_codes in zip(lookups, codes, strict=False):
            stage = lookup.table.index_select(0, stage_codes)
            quantized = stage if quantized is None else quantized + stage
        return quantized

    def encode(self, z: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Codes ``[B, n_q, frames]`` int64 of ``z [B, dim, frames]``; deterministic, never updates."""
        n_q = self._check_n_q(n_q)
        batch, dim, frames = z.shape
        codes, _ = self.encode_rows(z.transpose(1, 2).reshape(-1, dim), n_q)
        return codes.view(n_q, batch, frames).transpose(0, 1).contiguous()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, dim, frames]`` float32 of codes ``[B, n_q, frames]`` (any ``n_q``)."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(
                f"codes must be [batch, n_q <= {self.num_quantizers}, frames], got {tuple(codes.shape)}"
            )
        batch, n_q, frames = codes.shape
        rows = self.decode_rows(codes.transpose(0, 1).reshape(n_q, -1))
        return rows.view(batch, frames, self.dim).transpose(1, 2)  # (no -1: frames may be 0)
