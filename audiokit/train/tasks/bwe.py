"""The bandwidth-extension task: band-limited inputs made on the fly, spectral and mel losses.

One step: extend the batch's ``"input"`` (band-limited at ``"edge_hz"``,
:class:`~audiokit.train.narrowband.NarrowbandDataset`) and compare with the wideband ``"clean"``
through a multi-resolution magnitude loss, a multi-scale mel loss and a compressed complex loss.

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
from audiokit.evaluation import baselines
from audiokit.losses import CompressedComplexSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss
from audiokit.models.bwe import BandwidthExtender
from audiokit.train.data import read_clips
from audiokit.train.narrowband import DegradationConfig, NarrowbandDataset
from audiokit.train.recipe import Recipe, check
from audiokit.train.task import Evaluation, Task, mean_scores, register_task


@dataclass
class BweLossesConfig:
    """Loss weights (0 switches one off); STFT resolutions ``[n_fft, hop, window]`` in samples."""

    magnitude: float = 1.0
    mel: float = 1.0
    complex: float = 0.5
    complex_exponent: float = 0.3
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[512, 128, 512], [1024, 256, 1024], [256, 64, 256]]
    )
    mel_window_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [40, 80, 128, 160])


@dataclass
class BweRecipe(Recipe):
    """A bandwidth-extension recipe: the shared sections plus ``degradation`` and ``losses``."""

    task: str = "bwe"
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    losses: BweLossesConfig = field(default_factory=BweLossesConfig)

    def validate(self, where: str) -> None:
        super().validate(where)
        d, losses = self.degradation, self.losses
        for name in ("telephone_probability", "g711_probability", "noise_probability"):
            value = getattr(d, name)
            check(0.0 <= value <= 1.0, where, f"'degradation.{name}' must be in [0, 1], got {value}")
        for name in ("telephone_cutoff_hz", "wideband_cutoff_hz", "noise_snr_db"):
            low, high = getattr(d, name)
            check(low <= high, where, f"'degradation.{name}' must be [low, high]")
        check(losses.magnitude > 0 or losses.mel > 0 or losses.complex > 0, where, "every loss weight is 0")
        check(len(losses.mel_window_lengths) == len(losses.mel_bins), where, "mel lists differ in length")


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
        fft, hop, win = zip(*cfg.stft_resolutions, strict=True)
        self.magnitude_loss = MultiResolutionSTFTLoss(fft, hop, win).to(device)
        self.complex_loss = CompressedComplexSTFTLoss(fft, hop, win, cfg.complex_exponent).to(device)
        self.mel_loss = MultiScaleMelLoss(
            model.sample_rate, window_lengths=cfg.mel_window_lengths, n_mels=cfg.mel_bins
        ).to(device)
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
        )

    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        cfg, device = self.recipe.losses, self.runtime.device
        x = batch["input"].to(device, non_blocking=True)
        clean = batch["clean"].to(device, non_blocking=True)
        with self.runtime.autocast():
            out = model(x, batch["edge_hz"].to(device)).float()
        losses = {}
        if cfg.magnitude:
            losses["magnitude"] = self.magnitude_loss(out, clean)
        if cfg.mel:
            losses["mel"] = self.mel_loss(out, clean)
        if cfg.complex:
            losses["complex"] = self.complex_loss(out, clean)
        sum(getattr(cfg, name) * value for name, value in losses.items()).backward()
        return {f"loss/{name}": value.detach() for name, value in losses.items()}

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
