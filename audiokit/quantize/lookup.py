"""Nearest-codeword search: the one lookup that offline coding, streaming and training all use.

Scores are computed in float64. Trained codebooks can sit far from the origin with close neighbours
(``speech-16k``'s later stages: codewords of norm up to ~15, neighbours ~0.02 apart): in float32 the
expansion ``|c|^2 - 2 z.c`` then loses to cancellation the ~1e-4 by which the nearest codeword wins,
so ~3 % of its later-stage float32 lookups picked a codeword that was not the nearest, and two
computations of the same latent that rounded differently (a chunked and a whole-signal product)
picked different ones. In float64 the scores are exact to ~1e-13, far below any gap seen (~1e-7).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from audiokit import ops

ROWS_PER_BLOCK = 4096  # bounds the (rows, codebook_size) float64 score matrix (32 MB for 1024 codewords)


@dataclass
class CodebookSearch:
    """A codebook prepared for nearest-codeword queries.

    ``vectors``: ``(d, K)`` float64, the transposed codebook (L2-normalised for a cosine search);
    ``offsets``: ``|c|^2`` ``(K,)`` float64 for a Euclidean search, ``None`` for a cosine one.
    """

    vectors: torch.Tensor
    offsets: torch.Tensor | None

    @classmethod
    def of(cls, codebook: torch.Tensor, l2_normalize: bool = False) -> CodebookSearch:
        """The search of ``codebook (K, d)``: by cosine similarity with ``l2_normalize``, else Euclidean."""
        vectors = codebook.detach().double()
        if l2_normalize:
            return cls(F.normalize(vectors, dim=1).t().contiguous(), None)
        return cls(vectors.t().contiguous(), vectors.square().sum(1))

    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Codes ``(N,)`` int64 of the codewords nearest to ``rows (N, d)`` (first index on exact ties)."""
        rows = rows.double()
        if self.offsets is None:
            rows = F.normalize(rows, dim=1)
        if rows.shape[0] <= ROWS_PER_BLOCK:
            return self._nearest(rows)
        return torch.cat([self._nearest(block) for block in rows.split(ROWS_PER_BLOCK)])

    def _nearest(self, rows: torch.Tensor) -> torch.Tensor:
        if self.offsets is None:
            return torch.mm(rows, self.vectors).argmax(1)
        # argmin |z - c|^2 = argmin |c|^2 - 2 z.c
        return torch.addmm(self.offsets, rows, self.vectors, alpha=-2.0).argmin(1)


@dataclass
class StageLookup:
    """One quantizer stage prepared for coding (see :meth:`VectorQuantizer.prepare_lookup`).

    ``project``: ``(W^T (dim, d), b (d,))`` float64 of the in-projection (``None``: none); ``search``:
    its codebook's :class:`CodebookSearch`; ``table``: ``(K, dim)`` float32, every codeword projected
    back to the latent space (``out_proj``, computed in float64 and rounded).
    """

    project: tuple[torch.Tensor, torch.Tensor] | None
    search: CodebookSearch
    table: torch.Tensor

    def codes(self, rows: torch.Tensor) -> torch.Tensor:
        """Codes ``(N,)`` int64 of latent rows ``(N, dim)``."""
        z = rows.double()
        if self.project is not None:
            z = torch.addmm(self.project[1], z, self.project[0])
        return self.search.nearest(z)


class StageLookups(list):
    """The :class:`StageLookup` of every stage, in order, and how :meth:`ResidualVectorQuantizer.encode_rows`
    runs them: ``backend`` is :func:`audiokit.ops.backend_for`'s choice when they were prepared (``cpp``:
    every stage at once in :func:`audiokit.ops.rvq_encode`, when the stages allow it; see :attr:`stacked`).
    """

    def __init__(self, stages: list[StageLookup]) -> None:
        super().__init__(stages)
        self.backend = ops.backend_for(stages[0].table) if stages else "torch"

    @functools.cached_property
    def stacked(self) -> tuple[torch.Tensor, ...] | None:
        """``(proj_w, proj_b, codebooks, offsets, tables)`` stacked over the stages, as
        :func:`audiokit.ops.rvq_encode` takes them; ``None`` unless every stage projects and searches by
        Euclidean distance in spaces of one size."""
        if not self or any(s.project is None or s.search.offsets is None for s in self):
            return None
        if len({(s.project[0].shape, s.search.vectors.shape, s.table.shape) for s in self}) > 1:
            return None
        return (
            torch.stack([s.project[0] for s in self]),
            torch.stack([s.project[1] for s in self]),
            torch.stack([s.search.vectors.t() for s in self]),
            torch.stack([s.search.offsets for s in self]),
            torch.stack([s.table for s in self]),
        )
