"""Noisy/clean training pairs for speech enhancement, mixed on the fly from training clips.

Each item is a pure function of ``(seed, rank, step, index)`` as in :class:`CropDataset`: a speech
crop (loudness-normalised, random gain and EQ), optionally reverberated, plus one or two noises
(recorded noise, music, babble of other training speech, white/pink/brown noise, mains hum, clicks) at an
SNR drawn uniformly from ``snr_db``. With reverberation the target keeps the direct path and the
early reflections (the first ``early_reflections_ms`` of the room response); the input has the
whole tail. A share ``clean_probability`` of items is clean speech in and out, so the model learns
to leave it alone. With probability ``pause_probability`` the speech first gets 1-3 pauses (digital
silence, 5 ms fades), so that the model hears noise alone and learns to remove it: the training
speech has almost none (about 1 % of its 20 ms frames lie 45 dB below the crop's loudest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

from audiokit import io
from audiokit.data import noises
from audiokit.errors import RecipeError
from audiokit.train.data import MAX_DRAWS, Clip, CropDataset, limit_peak, normalise_level, synthetic_rir

NOISE_KINDS = ("recorded", "music", "babble", "white", "pink", "brown", "hum", "clicks")


@dataclass
class MixtureConfig:
    """How enhancement pairs are made; SNRs in dB, times in seconds, probabilities in [0, 1].

    ``noise_weights`` gives the relative odds of each kind in :data:`NOISE_KINDS` (missing kinds: 0);
    ``second_noise_probability`` adds a second, independently drawn noise 0-10 dB below the first.
    ``speed_probability`` plays a share of the speech crops (also babble talkers) faster or slower by a
    factor drawn from ``speed_range`` (resampled: pitch, formants and tempo move together), for voices
    beyond the training speakers' range (docs/training.md, session 15).
    """

    snr_db: list[float] = field(default_factory=lambda: [-5.0, 20.0])
    clean_probability: float = 0.1
    reverb_probability: float = 0.3
    rt60_seconds: list[float] = field(default_factory=lambda: [0.2, 1.0])
    early_reflections_ms: float = 50.0
    second_noise_probability: float = 0.2
    pause_probability: float = 0.0
    pause_seconds: list[float] = field(default_factory=lambda: [0.1, 0.8])
    babble_talkers: list[int] = field(default_factory=lambda: [3, 8])
    speed_probability: float = 0.0
    speed_range: list[float] = field(default_factory=lambda: [0.85, 1.25])
    noise_weights: dict[str, float] = field(
        default_factory=lambda: {
            "recorded": 0.5,
            "babble": 0.15,
            "white": 0.05,
            "pink": 0.08,
            "brown": 0.04,
            "hum": 0.04,
            "clicks": 0.04,
        }
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.noise_weights) - set(NOISE_KINDS))
        if unknown:
            raise ValueError(f"unknown noise kinds {unknown}; known: {', '.join(NOISE_KINDS)}")
        if not any(w > 0 for w in self.noise_weights.values()):
            raise ValueError("noise_weights: at least one kind needs a positive weight")
        if not 0 < self.speed_range[0] <= self.speed_range[1]:
            raise ValueError(f"speed_range must be [low, high] with 0 < low <= high, got {self.speed_range}")


class MixtureDataset(CropDataset):
    """Batches of ``{"input": noisy, "clean": target}``, each ``(B, C, T)`` float32, indexed by step.

    ``clips`` are speech (also the source of babble), ``noise_clips`` recorded noise (needed when the
    ``recorded`` kind has a positive weight), ``music_clips`` music tracks (the ``music`` kind: an
    excerpt of a track drawn by length, read from disk without the cache, since a few hours of music
    would not fit it). ``config`` is the crop/level/EQ part (the recipe's ``data`` section) and
    ``mixture`` the mixing part.
    """

    def __init__(
        self, *args, mixture: MixtureConfig, music_clips: list[Clip] | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.mixture = mixture
        self.music_clips = music_clips or []
        self._music_weights = self._probabilities(self.music_clips) if self.music_clips else None
        weights = {k: mixture.noise_weights.get(k, 0.0) for k in NOISE_KINDS}
        if not self.noise_clips:
            weights["recorded"] = 0.0
        if not self.music_clips:
            weights["music"] = 0.0
        total = sum(weights.values())
        self._kinds = [k for k in NOISE_KINDS if weights[k] > 0]
        self._kind_odds = np.array([weights[k] / total for k in self._kinds])

    def _speech(self, rng: np.random.Generator) -> np.ndarray:
        mix = self.mixture
        if mix.speed_probability > 0 and rng.random() < mix.speed_probability:  # no draw when off
            speed = rng.uniform(*mix.speed_range)
            wav = self._crop(rng, self.clips, self._weights, round(self.segment * speed))
            rate = self.sample_rate
            wav = soxr.resample(np.ascontiguousarray(wav.T), rate * speed, rate, "HQ").T
            wav = np.pad(wav[:, : self.segment], ((0, 0), (0, max(0, self.segment - wav.shape[1]))))
        else:
            wav = self._crop(rng, self.clips, self._weights)
        return normalise_level(
            wav.astype(np.float32), self.sample_rate, self.config.loudness, self.config.target_level_db
        )

    def _draw_noise(self, rng: np.random.Generator) -> np.ndarray:
        kind = self._kinds[int(rng.choice(len(self._kinds), p=self._kind_odds))]
        shape = (self.channels, self.segment)
        if kind == "recorded":
            noise = self._crop(rng, self.noise_clips, self._noise_weights).astype(np.float32)
        elif kind == "music":
            noise = self._music_excerpt(rng)
        elif kind == "babble":
            low, high = self.mixture.babble_talkers
            noise = noises.babble([self._speech(rng) for _ in range(int(rng.integers(low, high + 1)))])
        elif kind in noises.COLOURS:
            noise = noises.coloured_noise(rng, *shape, noises.COLOURS[kind])
        elif kind == "hum":
            noise = noises.hum(rng, *shape, self.sample_rate)
        else:
            noise = noises.clicks(rng, *shape, self.sample_rate)
        return noise

    def _music_excerpt(self, rng: np.random.Generator) -> np.ndarray:
        """``(channels, segment)`` float32: a random excerpt of a music track drawn by length, read from
        disk at its own rate, then resampled and remixed (zero-padded when the track is shorter); an
        unreadable track is skipped as unreadable clips are (:meth:`_skip_unreadable`) and another drawn."""
        for _ in range(MAX_DRAWS):
            path = self.music_clips[int(rng.choice(len(self.music_clips), p=self._music_weights))].path
            if path in self.unreadable:
                continue
            try:
                with sf.SoundFile(path) as f:
                    rate = f.samplerate
                    needed = math.ceil(self.segment * rate / self.sample_rate)
                    f.seek(int(rng.integers(max(1, f.frames - needed + 1))))
                    wav = f.read(needed, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                self._skip_unreadable(path, str(exc))
                continue
            wav = io.remix(io.resample(wav, rate, self.sample_rate), self.channels).T[:, : self.segment]
            return np.pad(wav, ((0, 0), (0, self.segment - wav.shape[1])))
        raise RecipeError(
            f"no readable music track in {MAX_DRAWS} draws; unreadable: {self._unreadable_summary()}"
        )

    def _insert_pauses(self, rng: np.random.Generator, wav: np.ndarray) -> np.ndarray:
        """``wav (channels, segment)`` silenced over 1-3 stretches of ``pause_seconds``, 5 ms fades."""
        segment = wav.shape[-1]
        fade = max(1, round(0.005 * self.sample_rate))
        ramp = (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade))).astype(np.float32)  # 1 -> 0
        gain = np.ones(segment + 2 * fade, dtype=np.float32)  # padded by ``fade`` on both sides
        for _ in range(int(rng.integers(1, 4))):
            length = min(segment, round(rng.uniform(*self.mixture.pause_seconds) * self.sample_rate))
            start = int(rng.integers(0, segment - length + 1)) + fade
            end = start + length
            gain[start - fade : start] = np.minimum(gain[start - fade : start], ramp)
            gain[start:end] = 0.0
            gain[end : end + fade] = np.minimum(gain[end : end + fade], ramp[::-1])
        return wav * gain[fade:-fade]

    def _reverberate(self, rng: np.random.Generator, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(reverberant, target)``: ``wav`` through a whole room response and through its early part."""
        rir = synthetic_rir(rng, self.sample_rate, rng.uniform(*self.mixture.rt60_seconds))
        early = rir[: max(1, round(self.mixture.early_reflections_ms * 1e-3 * self.sample_rate))]
        wet = scipy.signal.fftconvolve(wav, rir[None], axes=-1)[:, : wav.shape[1]]
        target = scipy.signal.fftconvolve(wav, early[None], axes=-1)[:, : wav.shape[1]]
        return wet.astype(np.float32), target.astype(np.float32)

    def item(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(noisy, target)`` crops ``(channels, segment)`` of item ``index`` of batch ``step``."""
        cfg, mix = self.config, self.mixture
        rng = np.random.default_rng([self.seed, self.rank, step, index])
        clean = self._speech(rng) * np.float32(10.0 ** (rng.uniform(*cfg.gain_db) / 20.0))
        if rng.random() < cfg.eq_probability:
            clean = self._equalise(rng, clean)
        if mix.pause_probability > 0 and rng.random() < mix.pause_probability:  # no draw when off
            clean = self._insert_pauses(rng, clean)
        if rng.random() < mix.clean_probability or not np.any(clean):
            noisy, target = clean, clean
        else:
            speech, target = clean, clean
            if rng.random() < mix.reverb_probability:
                speech, target = self._reverberate(rng, clean)
            noise = self._draw_noise(rng)
            if rng.random() < mix.second_noise_probability:
                noise = noise + self._draw_noise(rng) * np.float32(10.0 ** (-rng.uniform(0, 10) / 20.0))
            noisy = speech + _scaled_noise(target, noise, rng.uniform(*mix.snr_db))
        return limit_peak(noisy, target)


def _scaled_noise(reference: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that ``reference`` lies ``snr_db`` above it (silent noise stays silent)."""
    ref_power = float(np.mean(np.square(reference, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if noise_power <= 0 or ref_power <= 0:
        return noise
    return (noise * math.sqrt(ref_power / (noise_power * 10.0 ** (snr_db / 10.0)))).astype(np.float32)
