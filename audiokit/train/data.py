"""Training data: clips from JSONL manifests or directories, random crops and augmentation.

Every batch is a pure function of ``(seed, rank, step)``: item ``i`` of step ``s`` draws all its
randomness (clip, offset, gain, EQ, noise, reverb) from ``numpy.random.default_rng([seed, rank, s,
i])``. The data position saved in a checkpoint is therefore just the step counter, resuming is
exact, and worker processes need no shared state.

Per item: pick a clip (probability proportional to its duration, each group's share scaled to its
length ** ``group_exponent``), take a random crop of
``segment_seconds`` at the model rate (clips that are too short are extended with other clips of the
same group/speaker, then zero-padded; a clip that cannot be decoded is skipped with a warning and
another drawn, and more than :data:`MAX_UNREADABLE_FRACTION` of them stop the run), normalise its
loudness, apply a random gain, a random low/high-shelf EQ, optional synthetic reverb and optional
additive noise at a random SNR, and scale down if the result would clip.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import torch

from audiokit import io
from audiokit.data.manifest import DEFAULT_SAMPLE_RATE, find_manifest, read_manifest
from audiokit.data.mixing import mix_at_snr
from audiokit.dsp import loudness_lufs
from audiokit.errors import AudioFormatError, RecipeError
from audiokit.schema import json_number
from audiokit.train.recipe import DataConfig

PEAK_LIMIT = 0.99


def limit_peak(noisy: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A training pair scaled by one factor so that neither peaks above :data:`PEAK_LIMIT`, float32."""
    peak = float(max(np.abs(noisy).max(), np.abs(target).max()))
    scale = np.float32(PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0)
    return (noisy * scale).astype(np.float32), (target * scale).astype(np.float32)


@dataclass(frozen=True)
class Clip:
    """One audio file: its path, duration in seconds and group (speaker) label."""

    path: str
    seconds: float
    group: str


def resolve_source(spec: str, key: str = "data.train", sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """The manifest or directory ``spec`` names: a path, or the prepared manifest of that name for
    ``sample_rate`` (:func:`audiokit.data.manifest.find_manifest`)."""
    try:
        return find_manifest(spec, sample_rate=sample_rate)
    except FileNotFoundError as exc:
        rate = "" if sample_rate == DEFAULT_SAMPLE_RATE else f" --sample-rate {sample_rate}"
        relative = (
            "" if Path(spec).expanduser().is_absolute() else f"; relative paths are read from {Path.cwd()}"
        )
        raise RecipeError(
            f"{key}: {exc}{relative}; prepare the data first (`audiokit data prepare{rate}`, docs/data.md) "
            "or point it at a directory of audio files"
        ) from None


def _manifest_clips(path: Path, key: str) -> list[Clip]:
    """The clips a manifest lists; every file must exist now, not fail the step that first draws it."""
    try:
        rows = read_manifest(path)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    missing = [row["path"] for row in rows if not os.path.exists(row["path"])]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise RecipeError(f"{key}: {path} lists {missing[0]}{more}, not found; fix the manifest or its data")
    clips = []
    for row in rows:
        seconds = row.get("seconds")
        if seconds is None:
            seconds = io.info(row["path"]).duration
        elif not _is_duration(seconds):
            raise RecipeError(
                f"{key}: {path} gives {row['path']} a 'seconds' of {seconds!r}; it must be a finite number "
                "of seconds >= 0 (or be left out: the file's own duration)"
            )
        group = row.get("group") or row.get("speaker") or row["path"]
        clips.append(Clip(row["path"], float(seconds), str(group)))
    return clips


def _is_duration(value: object) -> bool:
    """Whether a manifest's ``seconds`` is a usable clip length: a finite number >= 0 (not a bool, nor an
    integer beyond float's range)."""
    return 0 <= json_number(value) < math.inf  # NaN for what is no number


def _directory_clips(path: Path, pattern: str) -> list[Clip]:
    files = sorted(p for p in path.rglob(pattern) if p.is_file() and p.suffix.lower() in io.AUDIO_EXTENSIONS)
    return [Clip(str(p), io.info(p).duration, str(p)) for p in files]


def read_clips(
    spec: str, pattern: str = "*", key: str = "data.train", sample_rate: int = DEFAULT_SAMPLE_RATE
) -> list[Clip]:
    """Clips of a manifest (JSONL with ``path`` and optionally ``seconds``, ``group``/``speaker``) or of
    the audio files matching ``pattern`` under a directory (each file its own group); a manifest name
    is looked up among the prepared manifests for ``sample_rate`` Hz."""
    source = resolve_source(spec, key, sample_rate)
    clips = _directory_clips(source, pattern) if source.is_dir() else _manifest_clips(source, key)
    clips = [c for c in clips if c.seconds > 0]
    if not clips:
        if source.is_dir():
            raise RecipeError(f"{key}: {source} holds no audio files matching data.glob {pattern!r}")
        raise RecipeError(f"{key}: the manifest {source} lists no clips of non-zero length")
    return clips


MAX_UNREADABLE_FRACTION = 0.05
"""More than this share of a run's clips (and more than :data:`MAX_UNREADABLE_CLIPS`) unreadable stops it."""
MAX_UNREADABLE_CLIPS = 10
MAX_DRAWS = 1000
"""Draws of a clip before giving up when every one drawn is unreadable."""


class AudioCache:
    """Decoded clips ``(channels, samples)`` at one rate; least recently used dropped past ``max_bytes``."""

    def __init__(self, sample_rate: int, channels: int, max_bytes: float) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, path: str) -> np.ndarray:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        wav, _ = io.load(path, sample_rate=self.sample_rate, channels=self.channels)
        data = wav.numpy()
        self._items[path] = data
        self._bytes += data.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes
        return data


def shelf_biquad(
    kind: str, gain_db: float, freq_hz: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of a ``low``/``high`` shelf (RBJ cookbook, slope 1): ``gain_db`` below/above ``freq_hz``."""
    if kind not in ("low", "high"):
        raise ValueError(f"kind must be 'low' or 'high', got {kind!r}")
    gain = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / sample_rate
    cos_w0 = math.cos(w0)
    alpha = math.sin(w0) / 2.0 * math.sqrt(2.0)
    root = 2.0 * math.sqrt(gain) * alpha
    sign = 1.0 if kind == "low" else -1.0
    b = np.array(
        [
            gain * ((gain + 1) - sign * (gain - 1) * cos_w0 + root),
            sign * 2 * gain * ((gain - 1) - sign * (gain + 1) * cos_w0),
            gain * ((gain + 1) - sign * (gain - 1) * cos_w0 - root),
        ]
    )
    a = np.array(
        [
            (gain + 1) + sign * (gain - 1) * cos_w0 + root,
            -sign * 2 * ((gain - 1) + sign * (gain + 1) * cos_w0),
            (gain + 1) + sign * (gain - 1) * cos_w0 - root,
        ]
    )
    return b / a[0], a / a[0]


def peaking_biquad(
    gain_db: float, freq_hz: float, q: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of a peaking filter (RBJ cookbook): ``gain_db`` at ``freq_hz``, 0 dB far from it,
    bandwidth set by ``q`` (centre frequency over the bandwidth between the half-gain points in dB)."""
    gain = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    cos_w0 = math.cos(w0)
    b = np.array([1.0 + alpha * gain, -2.0 * cos_w0, 1.0 - alpha * gain])
    a = np.array([1.0 + alpha / gain, -2.0 * cos_w0, 1.0 - alpha / gain])
    return b / a[0], a / a[0]


def synthetic_rir(rng: np.random.Generator, sample_rate: int, rt60_seconds: float) -> np.ndarray:
    """A room impulse response: a unit direct path then exponentially decaying noise (-60 dB at rt60)."""
    length = max(2, int(rt60_seconds * sample_rate))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * 10.0 ** (-3.0 * t / rt60_seconds) * 0.3
    tail[0] = 1.0
    return tail


def normalise_level(wav: np.ndarray, sample_rate: int, mode: str, target_db: float) -> np.ndarray:
    """Scale ``(channels, samples)`` to ``target_db`` LUFS (``lufs``) or dBFS RMS (``rms``); keeps silence."""
    if mode == "none":
        return wav
    if mode == "lufs":
        level = loudness_lufs(torch.from_numpy(wav), sample_rate)
    else:
        level = 10.0 * math.log10(max(float(np.mean(np.square(wav, dtype=np.float64))), 1e-20))
    if not math.isfinite(level) or level < -70.0:
        return wav
    return wav * np.float32(10.0 ** ((target_db - level) / 20.0))


class CropDataset(torch.utils.data.Dataset):
    """Batches of random crops, indexed by step: ``dataset[step]`` is a dict of ``(B, C, T)`` float32.

    ``"input"`` is the augmented crop (with noise when added) and ``"clean"`` the same crop before
    noise; both carry the same peak limiting, so they stay aligned.

    Args:
        clips: training clips; ``noise_clips`` optional noise clips (needed when
            ``config.noise_probability > 0``).
        sample_rate, channels: the model's rate in Hz and channel count.
        config: the recipe's ``data`` section (``batch_size`` is per process).
        seed, rank: with the step, they fix every random choice.
    """

    def __init__(
        self,
        clips: list[Clip],
        sample_rate: int,
        channels: int,
        config: DataConfig,
        seed: int,
        rank: int = 0,
        noise_clips: list[Clip] | None = None,
    ) -> None:
        self.clips = clips
        self.sample_rate = sample_rate
        self.channels = channels
        self.config = config
        self.seed = seed
        self.rank = rank
        self.noise_clips = noise_clips or []
        self.segment = max(1, round(config.segment_seconds * sample_rate))
        self.cache = AudioCache(sample_rate, channels, config.cache_mb * 2**20)
        self.unreadable: dict[str, str] = {}  # path -> why it cannot be decoded
        self._groups: dict[str, list[int]] = {}
        for index, clip in enumerate(clips):
            self._groups.setdefault(clip.group, []).append(index)
        self._weights = self._probabilities(clips)
        if config.group_exponent != 1.0:
            self._weights = self._balance_groups(self._weights, config.group_exponent)
        self._noise_weights = self._probabilities(self.noise_clips) if self.noise_clips else None

    @staticmethod
    def _probabilities(clips: list[Clip]) -> np.ndarray:
        seconds = np.array([c.seconds for c in clips], dtype=np.float64)
        return seconds / seconds.sum()

    def _balance_groups(self, weights: np.ndarray, exponent: float) -> np.ndarray:
        """``weights`` (by length) rescaled so that each group's share is its length ** ``exponent``."""
        out = np.empty_like(weights)
        for members in self._groups.values():
            share = weights[members].sum()
            out[members] = weights[members] / share * share**exponent
        return out / out.sum()

    def __len__(self) -> int:
        return 2**62

    def _crop(
        self, rng: np.random.Generator, clips: list[Clip], weights: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        """A random crop of ``size`` samples (default: the segment) of one clip, continued with clips
        of its group while too short, then zero-padded."""
        size = size or self.segment
        index, first = self._draw(rng, clips, weights)
        pieces, length = [first], first.shape[1]
        group = self._groups.get(clips[index].group, [index]) if clips is self.clips else [index]
        for _ in range(15):
            if length >= size:
                break
            other = self._read(clips[int(group[rng.integers(len(group))])].path)
            if other is not None:
                pieces.append(other)
                length += other.shape[1]
        wav = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        if wav.shape[1] < size:
            return np.pad(wav, ((0, 0), (0, size - wav.shape[1])))
        offset = int(rng.integers(wav.shape[1] - size + 1))
        return wav[:, offset : offset + size]

    def _draw(
        self, rng: np.random.Generator, clips: list[Clip], weights: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """A clip drawn with probability ``weights`` and its audio; an unreadable one is drawn again."""
        for _ in range(MAX_DRAWS):
            index = int(rng.choice(len(clips), p=weights))
            wav = self._read(clips[index].path)
            if wav is not None:
                return index, wav
        raise RecipeError(f"no readable clip in {MAX_DRAWS} draws; unreadable: {self._unreadable_summary()}")

    def _read(self, path: str) -> np.ndarray | None:
        """The decoded clip at ``path``, or None when it cannot be decoded (warned about once; too many
        such clips stop the run)."""
        if path in self.unreadable:
            return None
        try:
            return self.cache.get(path)
        except AudioFormatError as exc:
            self._skip_unreadable(path, exc.problem)
        return None

    def _skip_unreadable(self, path: str, problem: str) -> None:
        """Record ``path`` as unreadable (warned about once); too many such clips stop the run."""
        self.unreadable[path] = problem
        print(f"audiokit train: warning: skipping a training clip: {path}: {problem}", file=sys.stderr)
        total = len(self.clips) + len(self.noise_clips)
        if len(self.unreadable) > max(MAX_UNREADABLE_CLIPS, MAX_UNREADABLE_FRACTION * total):
            raise RecipeError(
                f"{len(self.unreadable)} of {total} training clips cannot be decoded: "
                f"{self._unreadable_summary()}; fix or remove them (audiokit data prepare rebuilds a corpus)"
            )

    def _unreadable_summary(self) -> str:
        path, problem = next(iter(self.unreadable.items()))
        more = f" and {len(self.unreadable) - 1} more" if len(self.unreadable) > 1 else ""
        return f"{path}: {problem}{more}"

    def _equalise(self, rng: np.random.Generator, wav: np.ndarray) -> np.ndarray:
        nyquist = self.sample_rate / 2
        max_db = self.config.eq_gain_db
        low = shelf_biquad("low", rng.uniform(-max_db, max_db), rng.uniform(100, 500), self.sample_rate)
        high_hz = rng.uniform(0.2, 0.6) * nyquist
        high = shelf_biquad("high", rng.uniform(-max_db, max_db), high_hz, self.sample_rate)
        wav = scipy.signal.lfilter(*low, wav, axis=-1)
        wav = scipy.signal.lfilter(*high, wav, axis=-1)
        for _ in range(self.config.eq_peaks):
            # a resonance moved, as another vocal tract or microphone would: log-uniform in 200 Hz-5 kHz
            freq_hz = math.exp(rng.uniform(math.log(200.0), math.log(min(5000.0, 0.45 * self.sample_rate))))
            gain_db = rng.uniform(-self.config.eq_peak_db, self.config.eq_peak_db)
            wav = scipy.signal.lfilter(
                *peaking_biquad(gain_db, freq_hz, rng.uniform(1.0, 4.0), self.sample_rate), wav, axis=-1
            )
        return wav.astype(np.float32)

    def _reverberate(self, rng: np.random.Generator, wav: np.ndarray) -> np.ndarray:
        rir = synthetic_rir(rng, self.sample_rate, rng.uniform(*self.config.rt60_seconds))
        wet = scipy.signal.fftconvolve(wav, rir[None], axes=-1)[:, : wav.shape[1]]
        dry_rms = np.sqrt(np.mean(np.square(wav, dtype=np.float64)))
        wet_rms = np.sqrt(np.mean(np.square(wet)))
        return (wet * (dry_rms / wet_rms if wet_rms > 0 else 1.0)).astype(np.float32)

    def _noise(self, rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
        noise = self._crop(rng, self.noise_clips, self._noise_weights)
        if not np.any(clean) or not np.any(noise):
            return clean
        # the caller limits the peak of the (input, clean) pair together, so no limiting here
        return mix_at_snr(clean, noise, rng.uniform(*self.config.snr_db), peak=math.inf)[1]

    def item(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(input, clean)`` crops ``(channels, segment)`` of item ``index`` of batch ``step``."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, self.rank, step, index])
        wav = self._crop(rng, self.clips, self._weights).astype(np.float32)
        wav = normalise_level(wav, self.sample_rate, cfg.loudness, cfg.target_level_db)
        wav = wav * np.float32(10.0 ** (rng.uniform(*cfg.gain_db) / 20.0))
        if rng.random() < cfg.eq_probability:
            wav = self._equalise(rng, wav)
        if rng.random() < cfg.reverb_probability:
            wav = self._reverberate(rng, wav)
        noisy = self._noise(rng, wav) if self.noise_clips and rng.random() < cfg.noise_probability else wav
        return limit_peak(noisy, wav)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.item(step, i) for i in range(self.config.batch_size)]
        return {
            "input": torch.from_numpy(np.stack([x for x, _ in items])),
            "clean": torch.from_numpy(np.stack([c for _, c in items])),
        }


class _Steps(torch.utils.data.Sampler):
    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1


def batches(dataset: CropDataset, start_step: int, num_workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches for steps ``start_step, start_step + 1, ...`` (workers preserve the order)."""
    if num_workers == 0:
        step = start_step
        while True:
            yield dataset[step]
            step += 1
    # the workers' base seed comes from a generator of their own: drawn from torch's global one, it moved
    # that generator's state on every start, so a resumed run (and one with other num_workers) diverged
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=_Steps(start_step),
        num_workers=num_workers,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )
    yield from loader


def load_validation(
    spec: str, sample_rate: int, channels: int, pattern: str, max_files: int, max_seconds: float
) -> list[tuple[str, torch.Tensor]]:
    """Up to ``max_files`` validation clips ``(name, (channels, samples))``, each cut to ``max_seconds``."""
    clips = read_clips(spec, pattern, key="data.valid", sample_rate=sample_rate)[:max_files]
    limit = max(1, round(max_seconds * sample_rate))
    out = []
    for clip in clips:
        wav, _ = io.load(clip.path, sample_rate=sample_rate, channels=channels)
        out.append((Path(clip.path).stem, wav[:, :limit]))
    return out
