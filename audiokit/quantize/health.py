"""Codebook health: near-duplicate codewords, and per-stage usage of a codec on a set of clips.

Two codewords are near-duplicates when their cosine similarity exceeds ``cosine`` (they point the same
way; a cosine lookup cannot tell them apart and a Euclidean one only by length) or their Euclidean
distance is below ``distance`` times the codebook's spread (the RMS distance of its codewords from
their mean). Training restarts the less-used codeword of each such pair
(:class:`~audiokit.quantize.vq.VectorQuantizer`); :func:`codebook_health` reports them for a model card.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from audiokit.models import Codec

DUPLICATE_COSINE = 0.9999
"""Cosine similarity above which two codewords count as near-duplicates in reports."""
DUPLICATE_DISTANCE = 1e-3
"""Euclidean distance, relative to the codebook's spread, below which two codewords count as
near-duplicates in reports."""


def spread(codebook: torch.Tensor) -> float:
    """RMS distance of the codewords ``(K, d)`` from their mean."""
    centred = codebook.double() - codebook.double().mean(0)
    return float(centred.square().sum(1).mean().sqrt())


def offset(codebook: torch.Tensor) -> float:
    """Distance of the codewords' ``(K, d)`` mean from the origin, in units of :func:`spread`. The code
    space of a factorised stage is affine (its in-projection has a bias), so its origin is arbitrary; a
    large offset makes every pair of codewords point nearly the same way (cosine near 1) without their
    being close."""
    return float(codebook.double().mean(0).norm()) / spread(codebook)


def effective_dimensions(codebook: torch.Tensor) -> float:
    """How many of the ``d`` directions the codewords ``(K, d)`` spread over: the participation ratio
    ``(sum l)^2 / sum l^2`` of the eigenvalues ``l`` of their covariance (``d`` for an isotropic cloud, 1
    for codewords on a line)."""
    centred = codebook.double() - codebook.double().mean(0)
    eigen = torch.linalg.svdvals(centred).square()
    return float(eigen.sum().square() / eigen.square().sum().clamp_min(1e-300))


def duplicate_pairs(codebook: torch.Tensor, cosine: float = 0.0, distance: float = 0.0) -> torch.Tensor:
    """``(K, K)`` bool, symmetric, false on the diagonal: codeword pairs of ``codebook (K, d)`` with cosine
    similarity above ``cosine`` (``0``: not tested) or Euclidean distance below ``distance`` times
    :func:`spread` (``0``: not tested). Computed in float64."""
    vectors = codebook.detach().double()
    size = vectors.shape[0]
    pairs = torch.zeros(size, size, dtype=torch.bool, device=vectors.device)
    if cosine > 0:
        unit = F.normalize(vectors, dim=1)
        pairs |= unit @ unit.t() > cosine
    if distance > 0:
        pairs |= torch.cdist(vectors, vectors) < distance * spread(vectors)
    pairs.fill_diagonal_(False)
    return pairs


def redundant_codewords(
    codebook: torch.Tensor, usage: torch.Tensor, cosine: float = 0.0, distance: float = 0.0
) -> torch.Tensor:
    """``(K,)`` bool: every codeword that has a near-duplicate (see :func:`duplicate_pairs`) used more
    (``usage (K,)``, e.g. EMA counts; the lower index wins a tie). Restarting these leaves one codeword
    of each pair."""
    pairs = duplicate_pairs(codebook, cosine, distance)
    if not pairs.any():
        return torch.zeros(codebook.shape[0], dtype=torch.bool, device=codebook.device)
    index = torch.arange(codebook.shape[0], device=codebook.device)
    u = usage.to(codebook.device)
    better = (u[:, None] > u[None, :]) | ((u[:, None] == u[None, :]) & (index[:, None] < index[None, :]))
    return (pairs & better).any(0)


@torch.inference_mode()
def codebook_health(
    codec: Codec,
    clips: Iterable[torch.Tensor],
    cosine: float = DUPLICATE_COSINE,
    distance: float = DUPLICATE_DISTANCE,
) -> list[dict]:
    """Per-stage health of ``codec``'s codebooks: usage over ``clips`` (audio ``(channels, samples)`` at
    the codec's rate, coded with every codebook) and near-duplicate pairs of the codebooks themselves.

    One dict per stage: ``stage`` (1-based), ``perplexity`` (exp of the entropy, nats, of the code
    counts over all clips; ``codebook_size`` for uniform use), ``used`` (codewords chosen at least
    once), ``dead`` (never chosen), ``duplicates_cosine`` and ``duplicates_euclidean`` (pairs with
    cosine > ``cosine`` / distance < ``distance`` x spread), ``duplicates_cosine_centred`` (cosine about
    the codewords' mean), ``min_distance`` (closest pair, in units of the spread), ``offset``
    (:func:`offset`), ``effective_dims`` (:func:`effective_dimensions`), ``frames`` (codes counted).
    """
    size = codec.codebook_size
    stages = codec.quantizer.quantizers
    counts = torch.zeros(len(stages), size, dtype=torch.int64)
    for wav in clips:
        codes = codec.encode(wav[None].float(), max(codec.bitrates)).codes  # (rows, n_q, frames)
        for q in range(len(stages)):
            counts[q] += torch.bincount(codes[:, q].reshape(-1), minlength=size)
    report = []
    for q, stage in enumerate(stages):
        book = stage.codebook.detach().double()
        probs = counts[q].double() / counts[q].sum().clamp_min(1)
        entropy = -(probs * probs.clamp_min(1e-300).log()).sum()
        gaps = torch.cdist(book, book).fill_diagonal_(float("inf"))
        report.append(
            {
                "stage": q + 1,
                "perplexity": float(entropy.exp()),
                "used": int((counts[q] > 0).sum()),
                "dead": int((counts[q] == 0).sum()),
                "duplicates_cosine": int(duplicate_pairs(book, cosine=cosine).sum()) // 2,
                "duplicates_cosine_centred": int(duplicate_pairs(book - book.mean(0), cosine=cosine).sum())
                // 2,
                "duplicates_euclidean": int(duplicate_pairs(book, distance=distance).sum()) // 2,
                "min_distance": float(gaps.min()) / spread(book),
                "offset": offset(book),
                "effective_dims": effective_dimensions(book),
                "frames": int(counts[q].sum()),
            }
        )
    return report
