"""A small audio classifier whose time-frequency front end is chosen by name (``frontend:``)."""

from __future__ import annotations

import torch
from torch import nn

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.frontends import build_frontend, is_unit_parameter


class AudioClassifier(nn.Module):
    """``(B, T)`` audio -> ``(B, n_classes)`` logits.

    Front end (``mel``, ``stft``, ``diffstft`` or ``adaptive``, see :func:`audiokit.frontends.build_frontend`)
    -> per-band BatchNorm -> three conv1d layers -> mean and max over time -> linear. Bad options, and
    inputs too short for one frame of the front end, raise :class:`~audiokit.errors.UsageError`.
    """

    def __init__(
        self, n_classes: int, sample_rate: int, frontend: str = "mel", width: int = 96, **frontend_options
    ) -> None:
        super().__init__()
        whole_number(n_classes, "AudioClassifier: n_classes")
        whole_number(width, "AudioClassifier: width")
        self.frontend_name = frontend
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
        features = self.frontend(x)  # (B, n_features, frames)
        if not features.shape[-1]:  # the adaptive front end gives none for less than one hop
            raise UsageError(
                f"AudioClassifier: {x.shape[-1]} samples give no frame of the {self.frontend_name!r} front "
                f"end; it needs at least {round(self.frontend.hop_length)} samples (one hop)"
            )
        h = self.body(self.norm(features))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))
