"""Differentiable concentration criteria of a time-frequency representation (TFR).

Each takes a complex or magnitude spectrogram ``(..., F, frames)``, works on the power
``P = |S|^2`` and reduces over ``dim`` (default: the whole TFR; ``dim=-2`` gives one value per
frame). All are invariant to the scale of ``S``. ``eps`` guards silent inputs.
"""

from __future__ import annotations

import math

import torch

from audiokit.errors import UsageError

Dims = int | tuple[int, ...]


def _power(spec: torch.Tensor) -> torch.Tensor:
    return spec.real**2 + spec.imag**2 if spec.is_complex() else spec**2


def concentration(spec: torch.Tensor, dim: Dims = (-2, -1), eps: float = 1e-12) -> torch.Tensor:
    """Jones-Parks concentration ``sum P^2 / (sum P)^2`` in ``(0, 1]``; higher is more concentrated."""
    power = _power(spec)
    return (power**2).sum(dim) / (power.sum(dim) ** 2 + eps)


def kurtosis(spec: torch.Tensor, dim: Dims = (-2, -1), eps: float = 1e-12) -> torch.Tensor:
    """Normalised fourth moment ``mean|S|^4 / (mean|S|^2)^2`` (2 for complex noise); higher: peakier."""
    power = _power(spec)
    return (power**2).mean(dim) / (power.mean(dim) ** 2 + eps)


def renyi_entropy(
    spec: torch.Tensor, order: float = 3.0, dim: Dims = (-2, -1), eps: float = 1e-12
) -> torch.Tensor:
    """Renyi entropy (bits) of ``P / sum P`` of a finite order ``order > 0``, ``!= 1``; lower is more
    concentrated. Other orders raise :class:`~audiokit.errors.UsageError`."""
    if not (math.isfinite(order) and order > 0) or order == 1.0:
        raise UsageError(
            f"renyi_entropy: order {order} is not a finite order > 0 other than 1 (order 1 is the Shannon "
            "limit); use e.g. 3"
        )
    power = _power(spec)
    prob = power / (power.sum(dim, keepdim=True) + eps)
    return torch.log2((prob**order).sum(dim) + eps) / (1.0 - order)


def stankovic(spec: torch.Tensor, p: float = 2.0, dim: Dims = (-2, -1), eps: float = 1e-12) -> torch.Tensor:
    """Stankovic measure ``(sum (P / sum P)^(1/p))^p`` (finite ``p > 1``, else
    :class:`~audiokit.errors.UsageError`); lower is more concentrated."""
    if not (math.isfinite(p) and p > 1):
        raise UsageError(f"stankovic: p {p} is not a finite number > 1; use e.g. 2")
    power = _power(spec)
    prob = power / (power.sum(dim, keepdim=True) + eps)
    return ((prob + eps) ** (1.0 / p)).sum(dim) ** p
