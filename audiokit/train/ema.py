"""Exponential moving average of a model's weights, kept in a second copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every optimiser step.

    The effective decay is ``min(decay, (1 + updates) / (10 + updates))``, so early averages are not
    dominated by the random initialisation. Floating-point buffers (e.g. EMA codebooks) are copied,
    not averaged: they are already running averages. ``module`` is the averaged copy (eval mode).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards ``model``'s current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, param in zip(self.module.parameters(), model.parameters(), strict=True):
            if param.requires_grad:  # frozen weights (optim.frozen) stay as they are
                shadow.lerp_(param.detach(), 1.0 - decay)
        for shadow, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            shadow.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore the shadow weights and update count; the decay stays this EMA's (the recipe's)."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
