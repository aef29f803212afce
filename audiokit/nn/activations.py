"""Activations: Snake (periodic inductive bias for audio) and a name -> module factory."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = ("elu", "snake", "gelu", "leaky_relu")


class Snake(nn.Module):
    """``x + sin(alpha * x) ** 2 / alpha`` with a learnable ``alpha`` per channel; ``(B, C, T) -> (B, C, T)``.

    Evaluated as ``x + alpha * (x * sinc(alpha * x))**2`` (``sinc(u) = sin(u) / u``), which is the same
    function but exact and finite at ``alpha = 0`` (where it is the identity), in value and gradient.
    """

    def __init__(self, channels: int, alpha_init: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((channels, 1), float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shaped = x * torch.sinc(self.alpha * x * (1.0 / math.pi))
        return x + self.alpha * shaped.square()


def make_activation(name: str, channels: int) -> nn.Module:
    """Activation ``name`` (``elu``, ``snake``, ``gelu``, ``leaky_relu`` (slope 0.1)) for ``channels``."""
    if name == "elu":
        return nn.ELU()
    if name == "snake":
        return Snake(channels)
    if name == "gelu":
        return nn.GELU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
