"""Discriminators for any task: their recipe keys, their part, their update and the generator's terms.

A task with adversarial terms (the codec, the bandwidth extender) adds a ``discriminator`` section
(:class:`DiscriminatorConfig`) and the ``optim.disc_*`` keys (:class:`AdversarialOptimConfig`) to its
recipe, calls :func:`check_adversarial` from its ``validate``, and makes an :class:`Adversary`
(:func:`make_adversary`), whose part goes in the task's ``parts`` (so checkpoints hold the
discriminators, their optimiser and schedule). Each step the task adds
:meth:`Adversary.generator_losses` to its losses once :meth:`Adversary.generator_active`, and calls
:meth:`Adversary.train`, which updates the discriminators on real and generated audio when due.

Timing: the discriminators update every ``update_every`` steps from ``start_step``, alone for
``warmup_steps`` steps; the generator's adversarial and feature-matching losses start at
``start_step + warmup_steps``. A checkpoint whose discriminators have had no update holds only their
initialisation, so a ``--resume`` may change them or add them to a run that had none: they start
fresh, with the warm-up counted from ``start_step`` (set it to the step the run resumes at).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.losses import (
    CombinedDiscriminator,
    MultiBandMultiResolutionDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from audiokit.train.optim import Part, lr_factor, make_part
from audiokit.train.recipe import OptimConfig, Recipe, check, check_betas
from audiokit.train.runtime import Runtime

DISCRIMINATORS = {
    "msstft": MultiScaleSTFTDiscriminator,
    "mpd": MultiPeriodDiscriminator,
    "mrd": MultiBandMultiResolutionDiscriminator,
}


@dataclass
class DiscriminatorConfig:
    """Which discriminators (``msstft``, ``mpd``, ``mrd``), from which step, and how often they update.

    ``options`` maps a kind to keyword arguments of its class, e.g. ``{msstft: {filters: 16}}``.
    The discriminators train alone for ``warmup_steps`` steps from ``start_step``; the generator's
    adversarial and feature-matching losses start after that, against trained discriminators.
    """

    kinds: list[str] = field(default_factory=lambda: ["msstft", "mpd"])
    start_step: int = 20000
    warmup_steps: int = 0
    update_every: int = 1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdversarialOptimConfig(OptimConfig):
    """The model's AdamW (the generator's) plus the discriminators': ``disc_learning_rate``,
    ``disc_betas`` and ``disc_grad_clip`` (0: no clipping)."""

    disc_learning_rate: float = 3e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    disc_grad_clip: float = 10.0


def check_adversarial(
    disc: DiscriminatorConfig, optim: AdversarialOptimConfig, adversarial_kind: str, where: str
) -> None:
    """Value checks of the ``discriminator`` section, ``optim.disc_learning_rate`` and
    ``losses.adversarial_kind``; raises :class:`RecipeError`."""
    check(
        disc.warmup_steps >= 0,
        where,
        f"'discriminator.warmup_steps' must be >= 0, got {disc.warmup_steps}",
    )
    check(disc.update_every >= 1, where, "'discriminator.update_every' must be >= 1")
    for kind in disc.kinds:
        check(
            kind in DISCRIMINATORS,
            where,
            f"'discriminator.kinds': unknown {kind!r}; choose from {', '.join(DISCRIMINATORS)}",
        )
    for kind in disc.options:
        check(
            kind in DISCRIMINATORS,
            where,
            f"'discriminator.options.{kind}': unknown kind; choose from {', '.join(DISCRIMINATORS)}",
        )
    rate = optim.disc_learning_rate
    check(rate >= 1e-12, where, f"'optim.disc_learning_rate' must be > 0, got {rate}")
    check_betas(optim.disc_betas, "optim.disc_betas", where)
    clip = optim.disc_grad_clip
    check(clip >= 0, where, f"'optim.disc_grad_clip' must be >= 0, got {clip}")
    check(
        adversarial_kind in ("hinge", "lsgan"),
        where,
        f"'losses.adversarial_kind' must be hinge or lsgan, got {adversarial_kind!r}",
    )


def build_discriminator(config: DiscriminatorConfig, channels: int) -> nn.Module | None:
    """The discriminators of ``config.kinds`` combined into one module (``None`` when there are none)."""
    if not config.kinds:
        return None
    parts = []
    for kind in config.kinds:
        options = config.options.get(kind, {})
        try:
            parts.append(DISCRIMINATORS[kind](channels=channels, **options))
        except (TypeError, ValueError) as exc:
            raise RecipeError(
                f"recipe: 'discriminator.options.{kind}' {options} do not build it ({exc})"
            ) from None
    return CombinedDiscriminator(*parts)


def discriminator_part(recipe: Recipe, discriminator: nn.Module, runtime: Runtime) -> Part:
    """The discriminators' part (role ``discriminator``; ``recipe.optim`` an
    :class:`AdversarialOptimConfig`, ``recipe.discriminator`` a :class:`DiscriminatorConfig`); their
    schedule advances once per update, not per step."""
    o, s, disc = recipe.optim, recipe.schedule, recipe.discriminator
    total = s.total_steps or recipe.run.max_steps

    def updates(steps: int) -> int:
        return max(1, math.ceil(steps / disc.update_every))

    schedule = s
    if s.cooldown_start is not None:
        schedule = dataclasses.replace(
            s,
            cooldown_start=max(s.warmup_steps, updates(s.cooldown_start - disc.start_step)),
            cooldown_steps=updates(s.cooldown_steps),
        )
    factor = lr_factor(schedule, updates(total - disc.start_step))
    train_module = runtime.wrap(discriminator)
    # weight decay 0.01: AdamW's default, which the discriminators have always trained with
    return make_part(
        "discriminator",
        discriminator,
        train_module,
        o.disc_learning_rate,
        o.disc_betas,
        factor,
        o.disc_grad_clip,
        weight_decay=0.01,
    )


class Adversary:
    """A task's discriminators: when they update, their update, and the generator's losses from them.

    Args:
        recipe: the task's recipe, with a ``discriminator`` section and :class:`AdversarialOptimConfig`.
        discriminator: the discriminators (:func:`build_discriminator`), on ``runtime.device``.
        runtime: the process's runtime (autocast, DDP wrapping).
        adversarial, feature_matching: the generator's loss weights; with both 0 the discriminators
            never update (they are still checkpointed).
        kind: ``"hinge"`` or ``"lsgan"`` (:mod:`audiokit.losses.adversarial`).
    """

    def __init__(
        self,
        recipe: Recipe,
        discriminator: nn.Module,
        runtime: Runtime,
        adversarial: float,
        feature_matching: float,
        kind: str,
    ) -> None:
        self.config: DiscriminatorConfig = recipe.discriminator
        self.module = discriminator
        self.runtime = runtime
        self.adversarial, self.feature_matching, self.kind = adversarial, feature_matching, kind
        self.part = discriminator_part(recipe, discriminator, runtime)

    def active(self, step: int) -> bool:
        """Whether the discriminators take part at ``step`` (from ``start_step``, when used at all)."""
        if not (self.adversarial or self.feature_matching):
            return False
        return step >= self.config.start_step

    def generator_active(self, step: int) -> bool:
        """Whether the generator's adversarial and feature-matching losses count at ``step``."""
        return self.active(step) and step >= self.config.start_step + self.config.warmup_steps

    def generator_losses(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"adversarial"`` and ``"feature_matching"`` (those with a weight) of generated ``fake`` against
        ``real``, both ``(B, C, T)`` audio; gradients flow into ``fake`` and into the discriminators'
        weights, so differentiate w.r.t. ``fake`` only (``torch.autograd.grad``) and not ``backward``."""
        with self.runtime.autocast():
            fake_logits, fake_features = self.module(fake)
            with torch.no_grad():
                _, real_features = self.module(real)
        losses: dict[str, torch.Tensor] = {}
        if self.adversarial:
            losses["adversarial"] = generator_loss(fake_logits, self.kind).float()
        if self.feature_matching:
            losses["feature_matching"] = feature_matching_loss(real_features, fake_features).float()
        return losses

    def train(self, step: int, real: torch.Tensor, fake: torch.Tensor) -> dict[str, Any]:
        """Update the discriminators on ``real`` and detached generated ``fake`` (``(B, C, T)``) when due
        at ``step``; returns logs (their loss and gradient norm when updated, their learning rate)."""
        logs: dict[str, Any] = {}
        cfg = self.config
        if self.active(step) and (step - cfg.start_step) % cfg.update_every == 0:
            batch = real.shape[0]
            with self.runtime.autocast():
                logits, _ = self.part.train_module(torch.cat([real, fake]))
            loss = discriminator_loss(
                [lg[:batch].float() for lg in logits], [lg[batch:].float() for lg in logits], self.kind
            )
            loss.backward()
            logs = {"loss/discriminator": loss.detach(), "grad_norm/discriminator": self.part.update()}
        logs["lr/discriminator"] = self.part.lr
        return logs


def make_adversary(
    recipe: Recipe, channels: int, runtime: Runtime, adversarial: float, feature_matching: float, kind: str
) -> Adversary | None:
    """The :class:`Adversary` of ``recipe.discriminator`` for ``channels``-channel audio, its
    discriminators on ``runtime.device`` (``None`` when the recipe names none)."""
    discriminator = build_discriminator(recipe.discriminator, channels)
    if discriminator is None:
        return None
    discriminator.to(runtime.device)
    return Adversary(recipe, discriminator, runtime, adversarial, feature_matching, kind)
