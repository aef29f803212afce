"""Causal (unidirectional) LSTM over ``(B, C, T)`` sequences, with a residual connection."""

from __future__ import annotations

import torch
from torch import nn

from audiokit.nn.state import LSTMState
from audiokit.nn.streaming import StreamingModule


class StreamableLSTM(nn.Module, StreamingModule):
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

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        return LSTMState(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    def step_t(self, x: torch.Tensor, state: LSTMState, final: bool = False) -> torch.Tensor:
        y, (state.h, state.c) = self.lstm(x, (state.h, state.c))
        return x + y if self.skip else y
