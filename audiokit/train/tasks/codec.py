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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.evaluation import metrics
from audiokit.losses import (
    Balancer,
    CompressedComplexSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    PhaseDerivativeLoss,
    time_l1_loss,
)
from audiokit.losses.perceptual import PesqStyleLoss
from audiokit.models import AudioModel, Codec
from audiokit.models.growth import grow_to
from audiokit.train.adversarial import (
    AdversarialOptimConfig,
    DiscriminatorConfig,
    check_adversarial,
    make_adversary,
)
from audiokit.train.recipe import EvalConfig, Recipe, check, check_non_negative, check_resolutions
from audiokit.train.runtime import Runtime
from audiokit.train.task import Evaluation, Task, mean_scores, register_task

BALANCED_LOSSES = (
    "mel",
    "stft",
    "complex",
    "phase",
    "waveform",
    "pesq_style",
    "adversarial",
    "feature_matching",
)


@dataclass
class LossesConfig:
    """Generator loss weights (relative shares when ``balancer`` is on) and loss settings.

    ``mel``, ``stft``, ``complex``, ``phase``, ``waveform``, ``pesq_style`` (PESQ's disturbance in a
    differentiable form, :class:`~audiokit.losses.perceptual.PesqStyleLoss`), ``adversarial`` and
    ``feature_matching`` go through the balancer (when on); ``commitment`` and ``codebook`` are added to
    the total as plain weighted terms. A weight of 0 switches a loss off. The mel loss has one scale per
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
    pesq_style: float = 0.0
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
class CodecEvalConfig(EvalConfig):
    """Validation at each of ``bitrates`` (bits/s; empty: every bitrate the model supports)."""

    bitrates: list[float] = field(default_factory=list)


@dataclass
class CodecRecipe(Recipe):
    """A codec recipe: the shared sections plus ``losses`` and ``discriminator``."""

    optim: AdversarialOptimConfig = field(default_factory=AdversarialOptimConfig)
    eval: CodecEvalConfig = field(default_factory=CodecEvalConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def validate(self, where: str) -> None:
        super().validate(where)
        losses = self.losses
        check_adversarial(self.discriminator, self.optim, losses.adversarial_kind, where)
        check_non_negative(losses, (*BALANCED_LOSSES, "commitment", "codebook"), where)
        check_resolutions(losses, where, ("stft", "complex", "phase"), ("mel",))
        check(
            losses.mel > 0 or losses.stft > 0 or losses.complex > 0 or losses.waveform > 0,
            where,
            "one of 'losses.mel', 'losses.stft', 'losses.complex', 'losses.waveform' must be > 0 (nothing "
            "else trains the decoder before the discriminators start)",
        )
        exponent = losses.complex_exponent
        check(0.0 < exponent <= 1.0, where, f"'losses.complex_exponent' must be in (0, 1], got {exponent}")
        decay = losses.balancer_ema_decay
        check(0.0 <= decay <= 1.0, where, f"'losses.balancer_ema_decay' must be in [0, 1], got {decay}")
        check(
            losses.phase_exponent >= 0,
            where,
            f"'losses.phase_exponent' must be >= 0, got {losses.phase_exponent}",
        )


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
        cfg = recipe.losses
        self.adversary = make_adversary(
            recipe, model.channels, runtime, cfg.adversarial, cfg.feature_matching, cfg.adversarial_kind
        )
        if self.adversary is not None:
            self.parts.append(self.adversary.part)

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
        self.pesq_style_loss = PesqStyleLoss(self.model.sample_rate).to(device)
        self.balancer = (
            Balancer(self.weights, ema_decay=cfg.balancer_ema_decay)
            if cfg.balancer and sum(self.weights.values()) > 0
            else None
        )

    def adapt_pretrained(self, pretrained: AudioModel) -> tuple[AudioModel, dict[str, Any]]:
        """Weights with a smaller iSTFT decoder grow, and weights without rate conditioning or the
        recipe's rate decoders gain them, function-preserving, to the recipe's model."""
        config = self.model.config
        grown_fields = ("decoder", "rate_conditioned", "rate_decoders")
        if not isinstance(pretrained, Codec) or all(
            getattr(pretrained.config, name) == getattr(config, name) for name in grown_fields
        ):
            return pretrained, {}
        grown = grow_to(pretrained, config)
        note = {}
        if grown.config.decoder != pretrained.config.decoder:
            note["init_grown_to"] = dataclasses.asdict(grown.config.decoder)
        if grown.config.rate_conditioned != pretrained.config.rate_conditioned:
            note["init_rate_conditioned"] = True
        if grown.config.rate_decoders != pretrained.config.rate_decoders:
            note["init_rate_decoders"] = list(grown.config.rate_decoders)
        return grown, note

    # -- a step -------------------------------------------------------------------------------------
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
        if cfg.pesq_style:
            losses["pesq_style"] = self.pesq_style_loss(proxy, x)
        if self.adversary is not None and self.adversary.generator_active(step):
            losses.update(self.adversary.generator_losses(proxy, x))
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
        if self.adversary is not None:
            logs.update(self.adversary.train(step, x, audio.detach()))
        return logs

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
