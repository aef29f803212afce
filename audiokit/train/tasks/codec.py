"""The codec task: reconstruction, VQ, adversarial and feature-matching losses, discriminators, balancer.

One step: run the codec on the batch's ``"input"``, compute the reconstruction losses (and, from
``discriminator.start_step + discriminator.warmup_steps``, the adversarial and feature-matching
losses) on a detached copy of the output, combine their gradients w.r.t. the output through the
:class:`~audiokit.losses.Balancer` (or plain weights), and back-propagate that gradient together with
the quantizer losses in a single backward pass (so DDP sees one backward per step). Every
``discriminator.update_every`` steps from ``discriminator.start_step`` the discriminators then update
on real and decoded audio (their own part: AdamW, schedule, clipping); the run loop updates the codec.
Evaluation: every metric of :func:`audiokit.evaluation.score_pair` at each of ``eval.bitrates``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.evaluation import metrics
from audiokit.losses import (
    Balancer,
    CombinedDiscriminator,
    CompressedComplexSTFTLoss,
    MultiBandMultiResolutionDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    PhaseDerivativeLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    time_l1_loss,
)
from audiokit.models import AudioModel, Codec
from audiokit.models.growth import grow_to
from audiokit.train.optim import lr_factor, make_part
from audiokit.train.recipe import EvalConfig, OptimConfig, Recipe, check
from audiokit.train.runtime import Runtime
from audiokit.train.task import Evaluation, Task, mean_scores, register_task

DISCRIMINATORS = {
    "msstft": MultiScaleSTFTDiscriminator,
    "mpd": MultiPeriodDiscriminator,
    "mrd": MultiBandMultiResolutionDiscriminator,
}
BALANCED_LOSSES = ("mel", "stft", "complex", "phase", "waveform", "adversarial", "feature_matching")


@dataclass
class LossesConfig:
    """Generator loss weights (relative shares when ``balancer`` is on) and loss settings.

    ``mel``, ``stft``, ``complex``, ``phase``, ``waveform``, ``adversarial`` and ``feature_matching``
    go through the balancer (when on); ``commitment`` and ``codebook`` are added to the total as plain
    weighted terms. A weight of 0 switches a loss off. The mel loss has one scale per
    ``mel_window_lengths`` entry (samples) with ``mel_bins`` bands each; ``stft_resolutions`` lists
    ``[n_fft, hop, window]`` triples for the ``stft`` (magnitude), ``complex`` (magnitude and phase,
    magnitudes compressed by ``complex_exponent``) and ``phase`` (instantaneous frequency and group
    delay, weighted by reference magnitudes to the power ``phase_exponent``) losses.
    """

    mel: float = 15.0
    stft: float = 2.0
    complex: float = 0.0
    phase: float = 0.0
    waveform: float = 0.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    commitment: float = 1.0
    codebook: float = 1.0
    balancer: bool = True
    balancer_ema_decay: float = 0.999
    mel_window_lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [10, 20, 40, 80, 160, 320])
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]]
    )
    complex_exponent: float = 0.3
    phase_exponent: float = 1.0
    adversarial_kind: str = "hinge"


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
class CodecOptimConfig(OptimConfig):
    """The model's AdamW (the generator's) plus the discriminators': ``disc_learning_rate``,
    ``disc_betas`` and ``disc_grad_clip`` (0: no clipping)."""

    disc_learning_rate: float = 3e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    disc_grad_clip: float = 10.0


@dataclass
class CodecEvalConfig(EvalConfig):
    """Validation at each of ``bitrates`` (bits/s; empty: every bitrate the model supports)."""

    bitrates: list[float] = field(default_factory=list)


@dataclass
class CodecRecipe(Recipe):
    """A codec recipe: the shared sections plus ``losses`` and ``discriminator``."""

    optim: CodecOptimConfig = field(default_factory=CodecOptimConfig)
    eval: CodecEvalConfig = field(default_factory=CodecEvalConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def validate(self, where: str) -> None:
        super().validate(where)
        losses, disc = self.losses, self.discriminator
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
        rate = self.optim.disc_learning_rate
        check(rate >= 1e-12, where, f"'optim.disc_learning_rate' must be > 0, got {rate}")
        check(
            len(losses.mel_window_lengths) == len(losses.mel_bins),
            where,
            "'losses.mel_window_lengths' and 'losses.mel_bins' must have the same length",
        )
        check(
            all(len(r) == 3 for r in losses.stft_resolutions),
            where,
            "'losses.stft_resolutions' entries must be [n_fft, hop, window] triples",
        )
        check(
            losses.adversarial_kind in ("hinge", "lsgan"),
            where,
            f"'losses.adversarial_kind' must be hinge or lsgan, got {losses.adversarial_kind!r}",
        )
        check(
            losses.mel > 0 or losses.stft > 0 or losses.complex > 0 or losses.waveform > 0,
            where,
            "one of 'losses.mel', 'losses.stft', 'losses.complex', 'losses.waveform' must be > 0 (nothing "
            "else trains the decoder before the discriminators start)",
        )
        exponent = losses.complex_exponent
        check(0.0 < exponent <= 1.0, where, f"'losses.complex_exponent' must be in (0, 1], got {exponent}")
        check(
            losses.phase_exponent >= 0,
            where,
            f"'losses.phase_exponent' must be >= 0, got {losses.phase_exponent}",
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


@register_task
class CodecTask(Task):
    """Train a :class:`~audiokit.models.Codec` (see the module docstring)."""

    name = "codec"
    family = "codec"
    recipe_type = CodecRecipe
    model_role = "generator"
    broadcast_buffers = False  # the quantizer all-reduces its statistics: its buffers agree on all ranks

    recipe: CodecRecipe
    model: Codec

    def __init__(self, recipe: CodecRecipe, model: Codec, runtime: Runtime) -> None:
        super().__init__(recipe, model, runtime)
        supported = [round(b, 6) for b in model.bitrates]
        for bitrate in recipe.eval.bitrates:
            if round(bitrate, 6) not in supported:
                listed = ", ".join(f"{b:g}" for b in supported)
                raise RecipeError(
                    f"eval.bitrates: {bitrate:g} b/s is not supported by this model; choose from {listed}"
                )
        self._build_losses()
        self.discriminator = build_discriminator(recipe.discriminator, model.channels)
        if self.discriminator is not None:
            self.discriminator.to(runtime.device)
            self.disc = self._discriminator_part(self.discriminator)
            self.parts.append(self.disc)

    def _build_losses(self) -> None:
        cfg, device = self.recipe.losses, self.runtime.device
        self.weights = {name: getattr(cfg, name) for name in BALANCED_LOSSES}
        self.mel_loss = MultiScaleMelLoss(
            self.model.sample_rate, window_lengths=cfg.mel_window_lengths, n_mels=cfg.mel_bins
        ).to(device)
        fft, hop, win = zip(*cfg.stft_resolutions, strict=True) if cfg.stft_resolutions else ((), (), ())
        self.stft_loss = MultiResolutionSTFTLoss(fft, hop, win).to(device)
        self.complex_loss = CompressedComplexSTFTLoss(fft, hop, win, cfg.complex_exponent).to(device)
        self.phase_loss = PhaseDerivativeLoss(fft, hop, win, cfg.phase_exponent).to(device)
        self.balancer = (
            Balancer(self.weights, ema_decay=cfg.balancer_ema_decay)
            if cfg.balancer and sum(self.weights.values()) > 0
            else None
        )

    def _discriminator_part(self, discriminator: nn.Module):
        """The discriminators' part; their schedule advances once per update, not per step."""
        o, s, disc = self.recipe.optim, self.recipe.schedule, self.recipe.discriminator
        total = s.total_steps or self.recipe.run.max_steps

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
        train_module = self.runtime.wrap(discriminator)
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

    def adapt_pretrained(self, pretrained: AudioModel) -> tuple[AudioModel, dict[str, Any]]:
        """Weights with a smaller iSTFT decoder grow, function-preserving, to the recipe's."""
        if not isinstance(pretrained, Codec) or pretrained.config.decoder == self.model.config.decoder:
            return pretrained, {}
        grown = grow_to(pretrained, self.model.config)
        return grown, {"init_grown_to": dataclasses.asdict(grown.config.decoder)}

    # -- a step -------------------------------------------------------------------------------------
    def _discriminators_active(self, step: int) -> bool:
        cfg = self.recipe.losses
        if self.discriminator is None or not (cfg.adversarial or cfg.feature_matching):
            return False
        return step >= self.recipe.discriminator.start_step

    def _generator_adversarial_active(self, step: int) -> bool:
        disc = self.recipe.discriminator
        return self._discriminators_active(step) and step >= disc.start_step + disc.warmup_steps

    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        cfg = self.recipe.losses
        x = batch["input"].to(self.runtime.device, non_blocking=True)
        with self.runtime.autocast():
            out = model(x)
        audio = out.audio.float()
        proxy = audio.detach().requires_grad_()
        losses: dict[str, torch.Tensor] = {}
        if cfg.mel:
            losses["mel"] = self.mel_loss(proxy, x)
        if cfg.stft:
            losses["stft"] = self.stft_loss(proxy, x)
        if cfg.complex:
            losses["complex"] = self.complex_loss(proxy, x)
        if cfg.phase:
            losses["phase"] = self.phase_loss(proxy, x)
        if cfg.waveform:
            losses["waveform"] = time_l1_loss(proxy, x)
        if self._generator_adversarial_active(step):
            with self.runtime.autocast():
                fake_logits, fake_features = self.discriminator(proxy)
                with torch.no_grad():
                    _, real_features = self.discriminator(x)
            if cfg.adversarial:
                losses["adversarial"] = generator_loss(fake_logits, cfg.adversarial_kind).float()
            if cfg.feature_matching:
                losses["feature_matching"] = feature_matching_loss(real_features, fake_features).float()
        if self.balancer is not None:
            proxy.grad = None
            self.balancer.backward(losses, proxy)
            output_grad = proxy.grad
        else:
            total = sum(self.weights[name] * value for name, value in losses.items())
            output_grad = torch.autograd.grad(total, [proxy])[0]
        vq = cfg.commitment * out.commitment_loss + cfg.codebook * out.codebook_loss
        if vq.requires_grad:
            torch.autograd.backward([audio, vq], [output_grad, None])
        else:
            audio.backward(output_grad)

        logs: dict[str, Any] = {f"loss/{name}": value.detach() for name, value in losses.items()}
        logs["loss/commitment"] = out.commitment_loss.detach()
        logs["loss/codebook"] = out.codebook_loss.detach()
        for name, value in out.metrics.items():
            logs[f"codebook/{name}_mean"] = value.detach().float().mean()
        logs["codebook_usage/q"] = metrics.codebook_usage(out.codes.detach(), self.model.codebook_size)
        for kind, name in (("dead", "restarted"), ("duplicates", "duplicates")):  # codewords per stage
            logs[f"codebook_restarts/{kind}"] = out.metrics[name].detach() * self.model.codebook_size
        if self.balancer is not None:
            logs.update({f"balancer/{k}": v for k, v in self.balancer.metrics.items()})
        disc = self.recipe.discriminator
        if self._discriminators_active(step) and (step - disc.start_step) % disc.update_every == 0:
            logs.update(self._discriminator_step(x, audio.detach()))
        if self.discriminator is not None:
            logs["lr/discriminator"] = self.disc.lr
        return logs

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = real.shape[0]
        with self.runtime.autocast():
            logits, _ = self.disc.train_module(torch.cat([real, fake]))
        loss = discriminator_loss(
            [lg[:batch].float() for lg in logits],
            [lg[batch:].float() for lg in logits],
            self.recipe.losses.adversarial_kind,
        )
        loss.backward()
        return {"loss/discriminator": loss.detach(), "grad_norm/discriminator": self.disc.update()}

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, model: Codec, clips: list[tuple[str, torch.Tensor]]) -> Evaluation:
        """Every metric at each bitrate, averaged over the clips; the highest bitrate's first
        ``eval.audio_examples`` clips as examples."""
        rate, device = model.sample_rate, self.runtime.device
        bitrates = self.recipe.eval.bitrates or model.bitrates
        result = Evaluation({"bitrates": {}})
        for bitrate in bitrates:
            pairs = []
            for name, wav in clips:
                decoded = model.decode(model.encode(wav[None].to(device), bitrate))[0].float().cpu()
                pairs.append((wav, decoded))
                if bitrate == max(bitrates) and len(pairs) <= self.recipe.eval.audio_examples:
                    result.examples += [(f"{name}/reference", wav, rate), (f"{name}/decoded", decoded, rate)]
            means = mean_scores(pairs, rate)
            result.record["bitrates"][f"{bitrate:g}"] = means
            for metric, value in means.items():
                result.scalars[f"eval/{metric}@{bitrate / 1000:g}kbps"] = value
        return result

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"balancer": self.balancer.state_dict() if self.balancer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.balancer is not None and state.get("balancer"):
            self.balancer.load_state_dict(state["balancer"])
