"""The bandwidth-extension task: band-limited inputs made on the fly, spectral, mel and adversarial losses.

One step: extend the batch's ``"input"`` (band-limited at ``"edge_hz"``,
:class:`~audiokit.train.narrowband.NarrowbandDataset`) and compare with the wideband ``"clean"``
through a multi-resolution magnitude loss, a multi-scale mel loss and a compressed complex loss, plus,
when the recipe names discriminators (``discriminator.kinds``, e.g. ``[mpd, mrd]`` as in HiFi-GAN
bandwidth extension; none by default), the adversarial and feature-matching losses from
``discriminator.start_step + discriminator.warmup_steps``. The weighted sum's gradient w.r.t. the
output is back-propagated through the model; the discriminators then update on clean and extended
audio when due (:class:`~audiokit.train.adversarial.Adversary`: the codec's discriminators, keys and
timing). Without discriminators a checkpoint holds the model's part only, as before they existed; a
``--resume`` may add them (they start fresh; set ``discriminator.start_step`` to the resumed step).

Validation (``data.valid``: wideband speech): each clip is resampled to half the rate (soxr) and
extended with :meth:`~audiokit.models.bwe.BandwidthExtender.extend`; every metric of
:func:`audiokit.evaluation.score_pair` (LSD included) is averaged for the output and, once per run,
for the sinc baseline (the same half-rate clip resampled back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from audiokit import io
from audiokit.errors import RecipeError
from audiokit.evaluation import baselines
from audiokit.losses import CompressedComplexSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss
from audiokit.models.base import resolve_config
from audiokit.models.bwe import BandwidthExtender
from audiokit.train.adversarial import (
    AdversarialOptimConfig,
    DiscriminatorConfig,
    check_adversarial,
    make_adversary,
)
from audiokit.train.data import read_clips
from audiokit.train.narrowband import DegradationConfig, NarrowbandDataset
from audiokit.train.recipe import (
    Recipe,
    check,
    check_loss_weights,
    check_non_negative,
    check_resolutions,
)
from audiokit.train.task import Evaluation, Task, mean_scores, register_task


@dataclass
class BweLossesConfig:
    """Loss weights of a plain weighted sum (0 switches one off); STFT resolutions
    ``[n_fft, hop, window]`` in samples. ``adversarial`` and ``feature_matching`` count only with
    discriminators (``adversarial_kind``: ``hinge`` or ``lsgan``). ``compressed_magnitude``: the
    complex term's compressed magnitudes alone, their errors weighted by ``excess_weight`` where the
    output is louder than the reference (above 1: a made band that errs on the quiet side, which PESQ
    prefers; :meth:`~audiokit.losses.CompressedComplexSTFTLoss.magnitude_from_spectra`)."""

    magnitude: float = 1.0
    mel: float = 1.0
    complex: float = 0.5
    compressed_magnitude: float = 0.0
    excess_weight: float = 1.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    adversarial_kind: str = "hinge"
    complex_exponent: float = 0.3
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[512, 128, 512], [1024, 256, 1024], [256, 64, 256]]
    )
    mel_window_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [40, 80, 128, 160])


@dataclass
class BweDiscriminatorConfig(DiscriminatorConfig):
    """The codec's ``discriminator`` keys, but none by default, and from step 0 when named."""

    kinds: list[str] = field(default_factory=list)
    start_step: int = 0


@dataclass
class BweRecipe(Recipe):
    """A bandwidth-extension recipe: the shared sections plus ``degradation``, ``losses`` and
    ``discriminator`` (and the ``optim.disc_*`` keys of the discriminators' AdamW)."""

    task: str = "bwe"
    optim: AdversarialOptimConfig = field(default_factory=AdversarialOptimConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    losses: BweLossesConfig = field(default_factory=BweLossesConfig)
    discriminator: BweDiscriminatorConfig = field(default_factory=BweDiscriminatorConfig)

    def validate(self, where: str) -> None:
        super().validate(where)
        d, losses = self.degradation, self.losses
        check_adversarial(self.discriminator, self.optim, losses.adversarial_kind, where)
        for name in ("telephone_probability", "g711_probability", "noise_probability"):
            value = getattr(d, name)
            check(0.0 <= value <= 1.0, where, f"'degradation.{name}' must be in [0, 1], got {value}")
        for name in ("telephone_cutoff_hz", "wideband_cutoff_hz", "noise_snr_db"):
            low, high = getattr(d, name)
            check(low <= high, where, f"'degradation.{name}' must be [low, high]")
        # the telephone path is decimated to half the model's rate: a cut-off above that rate's Nyquist
        # frequency aliased into the input; a wideband cut-off at or above the model's own failed in scipy
        rate = resolve_config(self.model.config, self.model.options, where, RecipeError)[1].sample_rate
        low, high = d.telephone_cutoff_hz
        check(
            0 < low and high <= rate / 4,
            where,
            f"'degradation.telephone_cutoff_hz' must lie in (0, {rate / 4:g}] Hz for a {rate} Hz model (the "
            f"telephone path is decimated to half its rate), got {[low, high]}",
        )
        low, high = d.wideband_cutoff_hz
        check(
            0 < low and high < rate / 2,
            where,
            f"'degradation.wideband_cutoff_hz' must lie in (0, {rate / 2:g}) Hz for a {rate} Hz model, "
            f"got {[low, high]}",
        )
        check_loss_weights(losses, ("magnitude", "mel", "complex", "compressed_magnitude"), where)
        check_non_negative(losses, ("adversarial", "feature_matching"), where)
        check_resolutions(losses, where, ("magnitude", "complex", "compressed_magnitude"), ("mel",))


@register_task
class BweTask(Task):
    """Train a :class:`~audiokit.models.bwe.BandwidthExtender` (see the module docstring)."""

    name = "bwe"
    family = "bwe"
    recipe_type = BweRecipe

    recipe: BweRecipe
    model: BandwidthExtender

    def __init__(self, recipe: BweRecipe, model: BandwidthExtender, runtime) -> None:
        super().__init__(recipe, model, runtime)
        cfg, device = recipe.losses, runtime.device
        fft, hop, win = zip(*cfg.stft_resolutions, strict=True) if cfg.stft_resolutions else ((), (), ())
        self.magnitude_loss = MultiResolutionSTFTLoss(fft, hop, win).to(device)
        self.complex_loss = CompressedComplexSTFTLoss(fft, hop, win, cfg.complex_exponent).to(device)
        self.mel_loss = MultiScaleMelLoss(
            model.sample_rate, window_lengths=cfg.mel_window_lengths, n_mels=cfg.mel_bins
        ).to(device)
        self.adversary = make_adversary(
            recipe, model.channels, runtime, cfg.adversarial, cfg.feature_matching, cfg.adversarial_kind
        )
        if self.adversary is not None:
            self.parts.append(self.adversary.part)
        self._sinc_scores: dict[str, float] | None = None

    def train_data(self) -> torch.utils.data.Dataset:
        d, rate = self.recipe.data, self.model.sample_rate
        clips = read_clips(d.train, d.glob, key="data.train", sample_rate=rate)
        return NarrowbandDataset(
            clips,
            rate,
            1,
            d,
            self.recipe.run.seed,
            self.runtime.rank,
            degradation=self.recipe.degradation,
            taps_per_phase=self.model.config.upsample_taps_per_phase,
            cutoff=self.model.config.upsample_cutoff,
        )

    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        cfg, device = self.recipe.losses, self.runtime.device
        x = batch["input"].to(device, non_blocking=True)
        clean = batch["clean"].to(device, non_blocking=True)
        with self.runtime.autocast():
            out = model(x, batch["edge_hz"].to(device)).float()
        # the losses' gradient w.r.t. the output only (not w.r.t. the discriminators' weights)
        proxy = out.detach().requires_grad_()
        losses = {}
        if cfg.magnitude:
            losses["magnitude"] = self.magnitude_loss(proxy, clean)
        if cfg.mel:
            losses["mel"] = self.mel_loss(proxy, clean)
        spectra = (
            list(self.complex_loss.spectra(proxy, clean)) if cfg.complex or cfg.compressed_magnitude else []
        )
        if cfg.complex:
            losses["complex"] = self.complex_loss.from_spectra(spectra)
        if cfg.compressed_magnitude:
            losses["compressed_magnitude"] = self.complex_loss.magnitude_from_spectra(
                spectra, cfg.excess_weight
            )
        if self.adversary is not None and self.adversary.generator_active(step):
            losses.update(self.adversary.generator_losses(proxy, clean))
        total = sum(getattr(cfg, name) * value for name, value in losses.items())
        out.backward(torch.autograd.grad(total, [proxy])[0])
        logs: dict[str, Any] = {f"loss/{name}": value.detach() for name, value in losses.items()}
        if self.adversary is not None:
            logs.update(self.adversary.train(step, clean, out.detach()))
        return logs

    def evaluate(self, model: BandwidthExtender, clips: list[tuple[str, torch.Tensor]]) -> Evaluation:
        """Every metric of the output and of sinc resampling from half the rate, averaged."""
        rate, half = model.sample_rate, model.sample_rate // 2
        narrow = [(wav, baselines.sinc(wav, rate, half).wav) for _, wav in clips]
        if self._sinc_scores is None:
            self._sinc_scores = mean_scores(narrow, rate)
        pairs, examples = [], []
        for (name, wav), (_, upsampled) in zip(clips, narrow, strict=True):
            low = torch.from_numpy(io.resample(wav.numpy().T, rate, half).T.copy())
            out = model.extend(low.to(self.runtime.device), half).float().cpu()[..., : wav.shape[-1]]
            pairs.append((wav, out))
            if len(examples) < 3 * self.recipe.eval.audio_examples:
                examples += [(f"{name}/reference", wav, rate), (f"{name}/sinc", upsampled, rate)]
                examples.append((f"{name}/extended", out, rate))
        result = Evaluation({"sinc": self._sinc_scores, "extended": mean_scores(pairs, rate)})
        for metric, value in result.record["extended"].items():
            result.scalars[f"eval/{metric}"] = value
        result.examples = examples
        return result
