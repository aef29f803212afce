"""Activations: Snake (periodic inductive bias for audio) and a name -> module factory."""

from __future__ import annotations

import math

import torch
from torch import nn

from audiokit.nn.state import StreamState
from audiokit.nn.streaming import StreamingModule

ACTIVATIONS = ("elu", "snake", "gelu", "leaky_relu")


def _snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    shaped = x * torch.sinc(alpha * x * (1.0 / math.pi))
    return x + alpha * shaped.square()


class Snake(nn.Module, StreamingModule):
    """``x + sin(alpha * x) ** 2 / alpha`` with a learnable ``alpha`` per channel; ``(B, C, T) -> (B, C, T)``.

    Evaluated as ``x + alpha * (x * sinc(alpha * x))**2`` (``sinc(u) = sin(u) / u``), which is the same
    function but exact and finite at ``alpha = 0`` (where it is the identity), in value and gradient.
    """

    def __init__(self, channels: int, alpha_init: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((channels, 1), float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _snake(x, self.alpha)

    def step_t(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """Time-major ``(B, n, C)``: stateless."""
        return _snake(x, self.alpha.t())


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
