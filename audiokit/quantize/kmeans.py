"""k-means (k-means++ seeding + Lloyd iterations) used to initialise codebooks from the first batch."""

from __future__ import annotations

import torch

from audiokit.quantize.distributed import all_reduce_sum_, broadcast_


def squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[N, K]`` between rows of ``x [N, d]`` and ``centres [K, d]``."""
    return (
        x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centres.t() + centres.pow(2).sum(1)[None, :]
    ).clamp_min_(0.0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick ``k`` seeds ``[k, d]`` from ``x [N, d]`` by D^2 sampling (uniform when all points coincide)."""
    n = x.shape[0]
    first = torch.randint(n, (1,), device=x.device, generator=generator)
    centres = [x[first]]
    min_d2 = squared_distances(x, centres[0]).squeeze(1)
    for _ in range(1, k):
        total = min_d2.sum()
        weights = min_d2 if total > 0 else torch.ones_like(min_d2)
        idx = torch.multinomial(weights, 1, generator=generator)
        centres.append(x[idx])
        min_d2 = torch.minimum(min_d2, squared_distances(x, centres[-1]).squeeze(1))
    return torch.cat(centres, 0)


def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``x [N, d]`` (float32) into ``k`` centres; returns ``(centres [k, d], counts [k])``.

    Seeds come from rank 0's data and are broadcast; the Lloyd statistics are all-reduced, so under
    ``torch.distributed`` every rank ends with the same centres fitted to all ranks' data. Empty
    clusters keep their previous centre.
    """
    centres = kmeans_plus_plus(x, k, generator)
    broadcast_(centres)
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    for _ in range(max(iters, 1)):
        assign = squared_distances(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        all_reduce_sum_(counts)
        all_reduce_sum_(sums)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)
    return centres, counts
