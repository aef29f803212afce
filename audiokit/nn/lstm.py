"""Causal (unidirectional) LSTM over ``(B, C, T)`` sequences, with a residual connection."""

from __future__ import annotations

import torch
from torch import nn


class StreamableLSTM(nn.Module):
    """``num_layers`` unidirectional LSTM layers of width ``dim``: ``(B, dim, T) -> (B, dim, T)``.

    Causal by construction; its streaming state is ``(h, c)``, each ``(num_layers, B, dim)``.
    With ``skip=True`` the input is added to the output.
    """

    def __init__(self, dim: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dim, dim, num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x.transpose(1, 2))
        y = y.transpose(1, 2)
        return x + y if self.skip else y
