"""Windows as smooth functions of a continuous length, evaluated on a fixed support.

A window of continuous length ``L`` (samples) is evaluated at offsets ``u`` (samples) from its
centre. Hann and Blackman are zero with zero slope at ``|u| = L / 2`` and zero beyond, so they
are continuously differentiable in both ``u`` and ``L``; the Gaussian has standard deviation
``L / 6`` (it falls to 1.1 % of its peak at ``|u| = L / 2``) and is not cut at ``L / 2``; on a
support of ``N`` samples it is multiplied by a fixed taper (flat over the central 75 %, cosine
roll-off to zero at ``|u| = N / 2 - 1``) that does not depend on ``L``, so that a frame whose
centre moves across an integer sample position changes continuously.
"""

from __future__ import annotations

import math

import torch

WINDOWS = ("hann", "blackman", "gaussian")

#: Gaussian standard deviation per sample of nominal length: ``std = GAUSSIAN_STD_PER_LENGTH * L``.
GAUSSIAN_STD_PER_LENGTH = 1.0 / 6.0


def support_taper(u: torch.Tensor, support: int) -> torch.Tensor:
    """Fixed Gaussian taper on a ``support``-sample frame: 1 for ``|u| <= 0.75 h``, cosine to 0 at ``h``.

    ``h = support / 2 - 1`` samples.
    """
    r = (u.abs() / (support / 2 - 1) - 0.75) / 0.25
    return torch.where(r <= 0, torch.ones_like(r), 0.5 + 0.5 * torch.cos(math.pi * r.clamp(0.0, 1.0)))


def continuous_window(
    name: str, u: torch.Tensor, length: torch.Tensor, support: int | None = None
) -> torch.Tensor:
    """Window ``name`` of length ``length`` (samples, broadcastable to ``u``) at centre offsets ``u``.

    ``support`` (samples) applies the fixed support taper to the Gaussian; other windows ignore it.

    Differentiable in ``u`` and ``length``. For integer ``L`` and ``u = m - L/2`` (``m = 0..L-1``)
    Hann and Blackman equal ``torch.hann_window(L)`` / ``torch.blackman_window(L)`` (periodic).
    """
    if name == "gaussian":
        std = length * GAUSSIAN_STD_PER_LENGTH
        w = torch.exp(-0.5 * (u / std) ** 2)
        return w if support is None else w * support_taper(u, support)
    phase = 2.0 * math.pi * u / length
    if name == "hann":
        w = 0.5 + 0.5 * torch.cos(phase)
    elif name == "blackman":
        w = 0.42 + 0.5 * torch.cos(phase) + 0.08 * torch.cos(2.0 * phase)
    else:
        raise ValueError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    inside = (2.0 * u.abs() < length).to(w.dtype)
    return w * inside
