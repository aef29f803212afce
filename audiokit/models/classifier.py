"""A small audio classifier whose time-frequency front end is chosen by name (``frontend:``)."""

from __future__ import annotations

import torch
from torch import nn

from audiokit.frontends import FRONTENDS, build_frontend, is_unit_parameter


class AudioClassifier(nn.Module):
    """``(B, T)`` audio -> ``(B, n_classes)`` logits.

    Front end (``mel``, ``stft``, ``diffstft`` or ``adaptive``, see :func:`audiokit.frontends.build_frontend`)
    -> per-band BatchNorm -> three conv1d layers -> mean and max over time -> linear.
    """

    def __init__(
        self, n_classes: int, sample_rate: int, frontend: str = "mel", width: int = 96, **frontend_options
    ) -> None:
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"unknown frontend {frontend!r}; choose one of {', '.join(FRONTENDS)}")
        self.frontend = build_frontend(frontend, sample_rate, **frontend_options)
        features = self.frontend.n_features
        self.norm = nn.BatchNorm1d(features)
        self.body = nn.Sequential(
            nn.Conv1d(features, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def parameter_groups(self, lr: float, frontend_lr: float) -> list[dict]:
        """Optimizer groups: front-end parameters in samples/Hz get ``frontend_lr``, the rest ``lr``."""
        unit, rest = [], []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                (unit if is_unit_parameter(name) else rest).append(parameter)
        return [{"params": rest, "lr": lr}, {"params": unit, "lr": frontend_lr}]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.norm(self.frontend(x)))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))
