"""The enhancement task: noisy/clean pairs mixed on the fly, spectral and SI-SDR losses.

One step: enhance the batch's ``"input"`` (speech + noise, :class:`~audiokit.train.mixtures.MixtureDataset`)
and compare with its ``"clean"`` target through a power-law compressed complex STFT loss (magnitude
and phase), a multi-resolution magnitude loss and negative SI-SDR, each weighted by ``losses``.

Validation (``data.valid``): a folder made by ``audiokit data mix`` (``clips.jsonl``, ``noisy/``,
``clean/``); ``eval.max_files`` pairs (the first ones, or every ``eval.stride``-th), each cut to
``eval.max_seconds``, are scored as noisy input and as enhanced output with every metric of
:func:`audiokit.evaluation.score_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiokit import io
from audiokit.data.manifest import read_jsonl
from audiokit.data.paths import data_root
from audiokit.errors import RecipeError
from audiokit.losses import CompressedComplexSTFTLoss, MultiResolutionSTFTLoss
from audiokit.losses.perceptual import PesqStyleLoss
from audiokit.models.base import AudioModel
from audiokit.models.enhancer import Enhancer, add_vad_head, grow_features, grow_hidden
from audiokit.train.data import read_clips
from audiokit.train.mixtures import NOISE_KINDS, MixtureConfig, MixtureDataset
from audiokit.train.recipe import Recipe, check, check_loss_weights, check_resolutions
from audiokit.train.task import Evaluation, Task, mean_scores, register_task


@dataclass
class EnhanceLossesConfig:
    """Loss weights (0 switches one off) and the STFT resolutions ``[n_fft, hop, window]`` (samples).

    ``band_gain``: mean squared error between the square roots of the predicted band gains and of the
    ideal ones (:meth:`Enhancer.ideal_band_gains`, RNNoise's training target): a direct signal for the
    gain head, which the spectral losses reach only through the synthesis. ``compressed_magnitude``:
    the complex term's compressed magnitudes alone (no pull towards zero where the phase is uncertain),
    their errors weighted by ``excess_weight`` where the output is louder than the target (above 1:
    residual noise costs more than removed speech, as in PESQ). ``pesq_style``: PESQ's disturbance in a
    differentiable form (:class:`~audiokit.losses.perceptual.PesqStyleLoss`). ``vad``: binary cross-entropy
    of the model's voice-activity head (``model.options.vad_head``) against the frames where the clean
    target holds speech (:meth:`Enhancer.speech_frames`), an auxiliary task as in RNNoise.
    """

    complex: float = 1.0
    compressed_magnitude: float = 0.0
    magnitude: float = 1.0
    si_sdr: float = 0.02
    band_gain: float = 0.0
    pesq_style: float = 0.0
    vad: float = 0.0
    excess_weight: float = 1.0
    complex_exponent: float = 0.3
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[512, 128, 512], [1024, 256, 1024], [256, 64, 256]]
    )


@dataclass
class EnhanceRecipe(Recipe):
    """An enhancement recipe: the shared sections plus ``mixture`` and ``losses``."""

    task: str = "enhance"
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    losses: EnhanceLossesConfig = field(default_factory=EnhanceLossesConfig)

    def validate(self, where: str) -> None:
        super().validate(where)
        m, losses = self.mixture, self.losses
        check(m.snr_db[0] <= m.snr_db[1], where, "'mixture.snr_db' must be [low, high]")
        for name, lowest in (("babble_talkers", 1), ("pause_seconds", 0.0), ("rt60_seconds", 0.0)):
            low, high = getattr(m, name)
            check(
                lowest <= low <= high,
                where,
                f"'mixture.{name}' must be [low, high] with {lowest} <= low <= high, got {[low, high]}",
            )
        check(m.rt60_seconds[0] > 0, where, f"'mixture.rt60_seconds' must be > 0, got {m.rt60_seconds}")
        check(
            m.early_reflections_ms >= 0,
            where,
            f"'mixture.early_reflections_ms' must be >= 0, got {m.early_reflections_ms}",
        )
        for name in (
            "clean_probability",
            "reverb_probability",
            "second_noise_probability",
            "pause_probability",
        ):
            value = getattr(m, name)
            check(0.0 <= value <= 1.0, where, f"'mixture.{name}' must be in [0, 1], got {value}")
        for kind, weight in m.noise_weights.items():
            check(
                kind in NOISE_KINDS,
                where,
                f"'mixture.noise_weights.{kind}': unknown; choose from {', '.join(NOISE_KINDS)}",
            )
            check(weight >= 0, where, f"'mixture.noise_weights.{kind}' must be >= 0, got {weight}")
        check(
            m.noise_weights.get("recorded", 0) == 0 or self.data.noise is not None,
            where,
            "'mixture.noise_weights.recorded' > 0 needs 'data.noise' (a noise manifest or directory)",
        )
        check(
            m.noise_weights.get("music", 0) == 0 or self.data.music is not None,
            where,
            "'mixture.noise_weights.music' > 0 needs 'data.music' (a music manifest or directory)",
        )
        terms = ("complex", "compressed_magnitude", "magnitude", "si_sdr", "band_gain", "pesq_style", "vad")
        check_loss_weights(losses, terms, where)
        check_resolutions(losses, where, ("complex", "compressed_magnitude", "magnitude"))


def negative_si_sdr(estimate: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over items of minus the scale-invariant SDR (dB) of ``estimate`` against ``target`` ``(B, C, T)``.

    Items whose target is silent are left out (SI-SDR is undefined there); 0 when all are.
    """
    est, ref = estimate.flatten(1), target.flatten(1)
    energy = ref.square().sum(-1)
    keep = energy > eps
    if not keep.any():
        return estimate.new_zeros(())
    est, ref, energy = est[keep], ref[keep], energy[keep]
    projection = (est * ref).sum(-1, keepdim=True) / energy[:, None] * ref
    noise = est - projection
    ratio = projection.square().sum(-1) / (noise.square().sum(-1) + eps)
    return -(10.0 * torch.log10(ratio + eps)).mean()


def read_noisy_set(
    folder: str | Path, sample_rate: int, max_files: int, max_seconds: float, stride: int = 1
) -> list:
    """``(name, (2, C, T))`` pairs (noisy, clean) of an ``audiokit data mix`` folder: ``max_files`` of
    them, every ``stride``-th from the first.

    ``folder``: a path, or a folder name under the data root (``$AUDIOKIT_DATA``).
    """
    folder = Path(folder).expanduser()
    if not folder.exists() and not folder.is_absolute():
        folder = data_root() / folder
    listing = folder / "clips.jsonl"
    if not listing.is_file():
        # a folder of something else (plain audio): `data mix --out` would refuse to write there
        if folder.is_dir() and any(folder.iterdir()):
            raise RecipeError(
                f"data.valid: {folder} is not a noisy set (no clips.jsonl); an enhancer validates on "
                "clean/ and noisy/ pairs made by `audiokit data mix --out NEW_DIR`"
            )
        raise RecipeError(f"data.valid: {listing} not found; make it with `audiokit data mix --out {folder}`")
    try:
        rows = read_jsonl(listing)[::stride][:max_files]
    except ValueError as exc:  # a cut or hand-edited list
        raise RecipeError(f"data.valid: {exc}; make the set again with `audiokit data mix`") from None
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise RecipeError(f"data.valid: {listing}: the row {str(row)[:80]} has no string 'name'")
    limit = max(1, round(max_seconds * sample_rate))
    pairs = []
    for row in rows:
        noisy, _ = io.load(folder / "noisy" / row["name"], sample_rate=sample_rate, channels=1)
        clean, _ = io.load(folder / "clean" / row["name"], sample_rate=sample_rate, channels=1)
        pairs.append((row["name"], torch.stack([noisy[:, :limit], clean[:, :limit]])))
    return pairs


@register_task
class EnhanceTask(Task):
    """Train an :class:`~audiokit.models.enhancer.Enhancer` (see the module docstring)."""

    name = "enhance"
    family = "enhancer"
    recipe_type = EnhanceRecipe

    recipe: EnhanceRecipe
    model: Enhancer

    def __init__(self, recipe: EnhanceRecipe, model: Enhancer, runtime) -> None:
        super().__init__(recipe, model, runtime)
        cfg = recipe.losses
        if cfg.vad and not model.config.vad_head:
            raise RecipeError(
                "'losses.vad' > 0 needs the model's voice-activity head ('model.options.vad_head: true')"
            )
        fft, hop, win = zip(*cfg.stft_resolutions, strict=True) if cfg.stft_resolutions else ((), (), ())
        self.complex_loss = CompressedComplexSTFTLoss(fft, hop, win, cfg.complex_exponent).to(runtime.device)
        self.magnitude_loss = MultiResolutionSTFTLoss(fft, hop, win).to(runtime.device)
        self.pesq_style_loss = PesqStyleLoss(model.sample_rate).to(runtime.device)
        self._noisy_scores: dict[str, float] | None = None

    def adapt_pretrained(self, pretrained: AudioModel) -> tuple[AudioModel, dict[str, Any]]:
        """Weights without the recipe's pitch analysis or noise floor gain them (:func:`grow_features`);
        a narrower recurrent network grows to the recipe's ``hidden_dim`` (:func:`grow_hidden`); weights
        without the recipe's voice-activity head gain a fresh one (:func:`add_vad_head`)."""
        if not isinstance(pretrained, Enhancer):
            return pretrained, {}
        want = self.model.config
        note: dict[str, Any] = {}
        if want.hidden_dim != pretrained.config.hidden_dim:
            pretrained = grow_hidden(pretrained, want.hidden_dim, self.recipe.run.seed)
            note["hidden_dim"] = want.hidden_dim
        have = pretrained.config
        added = {
            "pitch": want.pitch and not have.pitch,
            "pitch_filter": want.pitch and want.pitch_filter and not (have.pitch and have.pitch_filter),
            "noise_floor_rise": list(want.noise_floor_rise)
            if want.noise_floor_rise != have.noise_floor_rise
            else None,
        }
        note.update({k: v for k, v in added.items() if v})
        if any(added.values()):
            pretrained = grow_features(pretrained, want)
        if want.vad_head and not pretrained.config.vad_head:
            pretrained = add_vad_head(pretrained, self.recipe.run.seed)
            note["vad_head"] = True
        return pretrained, ({"init_grown_to": note} if note else {})

    def train_data(self) -> torch.utils.data.Dataset:
        d, rate = self.recipe.data, self.model.sample_rate
        clips = read_clips(d.train, d.glob, key="data.train", sample_rate=rate)
        noise = read_clips(d.noise, "*", key="data.noise", sample_rate=rate) if d.noise else None
        music = read_clips(d.music, "*", key="data.music", sample_rate=rate) if d.music else None
        return MixtureDataset(
            clips,
            rate,
            1,
            d,
            self.recipe.run.seed,
            self.runtime.rank,
            noise,
            mixture=self.recipe.mixture,
            music_clips=music,
        )

    def validation_data(self) -> list:
        d, e = self.recipe.data, self.recipe.eval
        if d.valid is None:
            return []
        return read_noisy_set(d.valid, self.model.sample_rate, e.max_files, e.max_seconds, e.stride)

    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        cfg, device = self.recipe.losses, self.runtime.device
        noisy = batch["input"].to(device, non_blocking=True)
        clean = batch["clean"].to(device, non_blocking=True)
        with self.runtime.autocast():
            out, band_gains, vad_logits = model(noisy, return_gains=True)
        out = out.float()
        losses = {}
        if cfg.vad:
            target = self.model.speech_frames(clean.flatten(0, 1)[:, None])
            losses["vad"] = nn.functional.binary_cross_entropy_with_logits(vad_logits.float(), target)
        if cfg.band_gain:
            ideal, valid = self.model.ideal_band_gains(
                noisy.flatten(0, 1)[:, None], clean.flatten(0, 1)[:, None]
            )
            error = (band_gains.float().sqrt() - ideal.sqrt()).square()
            losses["band_gain"] = (error * valid).sum() / valid.sum().clamp_min(1)
        spectral = cfg.complex or cfg.compressed_magnitude or cfg.magnitude
        spectra = list(self.complex_loss.spectra(out, clean)) if spectral else []
        if cfg.complex:  # the spectral losses share one set of STFTs (same resolutions)
            losses["complex"] = self.complex_loss.from_spectra(spectra)
        if cfg.compressed_magnitude:
            losses["compressed_magnitude"] = self.complex_loss.magnitude_from_spectra(
                spectra, cfg.excess_weight
            )
        if cfg.magnitude:
            losses["magnitude"] = self.magnitude_loss.from_spectra(spectra)
        if cfg.si_sdr:
            losses["si_sdr"] = negative_si_sdr(out, clean)
        if cfg.pesq_style:
            losses["pesq_style"] = self.pesq_style_loss(out, clean)
        total = sum(getattr(cfg, name) * value for name, value in losses.items())
        total.backward()
        return {f"loss/{name}": value.detach() for name, value in losses.items()}

    def evaluate(self, model: Enhancer, clips: list) -> Evaluation:
        """Every metric of the noisy input and of the output against the clean target, averaged."""
        rate, device = model.sample_rate, self.runtime.device
        enhanced_pairs, examples = [], []
        if self._noisy_scores is None:  # the input's scores do not change: once per run
            self._noisy_scores = mean_scores([(pair[1], pair[0]) for _, pair in clips], rate)
        for name, pair in clips:
            noisy, clean = pair[0], pair[1]
            enhanced = model(noisy[None].to(device))[0].float().cpu()
            enhanced_pairs.append((clean, enhanced))
            if len(examples) < 3 * self.recipe.eval.audio_examples:
                examples += [(f"{name}/noisy", noisy, rate), (f"{name}/enhanced", enhanced, rate)]
                examples.append((f"{name}/clean", clean, rate))
        result = Evaluation({"noisy": self._noisy_scores, "enhanced": mean_scores(enhanced_pairs, rate)})
        for metric, value in result.record["enhanced"].items():
            result.scalars[f"eval/{metric}"] = value
            result.scalars[f"eval/{metric}_gain"] = value - result.record["noisy"].get(metric, float("nan"))
        result.examples = examples
        return result
