"""Adversarial (hinge, least-squares) and feature-matching losses over several discriminators.

``logits`` are the per-discriminator lists returned by the discriminators in
:mod:`audiokit.losses.discriminators`; each loss averages over the discriminators.
"""

from __future__ import annotations

import torch

ADVERSARIAL_KINDS = ("hinge", "lsgan")


def _check(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {', '.join(ADVERSARIAL_KINDS)}")


def discriminator_loss(
    real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor], kind: str = "hinge"
) -> torch.Tensor:
    """Discriminator objective: hinge ``relu(1 - D(real)) + relu(1 + D(fake))`` or least squares
    ``(1 - D(real))^2 + D(fake)^2``, each averaged over positions, then over discriminators."""
    _check(kind)
    total = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits, strict=True):
        if kind == "hinge":
            total = total + torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
        else:
            total = total + (1 - real).square().mean() + fake.square().mean()
    return total / len(real_logits)


def generator_loss(fake_logits: list[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Generator objective: hinge ``relu(1 - D(fake))`` or least squares ``(1 - D(fake))^2``, averaged."""
    _check(kind)
    total = fake_logits[0].new_zeros(())
    for fake in fake_logits:
        total = total + (torch.relu(1 - fake) if kind == "hinge" else (1 - fake).square()).mean()
    return total / len(fake_logits)


def feature_matching_loss(
    real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]], normalize: bool = False
) -> torch.Tensor:
    """Mean over every discriminator layer of ``mean |fake - real|`` (real features detached).

    With ``normalize=True`` each layer's term is divided by ``mean |real|`` (EnCodec's relative form).
    """
    total, count = real_features[0][0].new_zeros(()), 0
    for real_maps, fake_maps in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_maps, fake_maps, strict=True):
            real = real.detach()
            term = (fake - real).abs().mean()
            total = total + (term / real.abs().mean().clamp(min=1e-8) if normalize else term)
            count += 1
    return total / count
