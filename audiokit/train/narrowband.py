"""Band-limited/wideband training pairs for bandwidth extension, made on the fly from wideband speech.

Each item is a pure function of ``(seed, rank, step, index)`` as in :class:`CropDataset`. A wideband
crop at the model rate (loudness-normalised, random gain and EQ) is the target; the input is one of:

* a telephone path (share ``telephone_probability``): an anti-aliasing low-pass (Butterworth,
  Chebyshev I or elliptic, order 4-10, cut-off uniform in ``telephone_cutoff_hz``), decimation to half
  the rate, optionally G.711 mu-law or A-law (``g711_probability``), then the model's own upsampling
  FIR back to the model rate; its band edge is :data:`~audiokit.models.bwe.NARROWBAND_EDGE_HZ`, what
  inference assumes for half-rate input;
* otherwise a model-rate signal low-passed at a cut-off uniform in ``wideband_cutoff_hz``, whose
  band edge is that cut-off (what :func:`audiokit.dsp.estimate_bandwidth` finds at inference);

plus, with ``noise_probability``, white noise ``noise_snr_db`` below the speech. Batches hold
``"input"`` and ``"clean"`` ``(B, C, T)`` and ``"edge_hz"`` ``(B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.signal
import torch

from audiokit.models.bwe import NARROWBAND_EDGE_HZ
from audiokit.nn.resample import DEFAULT_CUTOFF, lowpass_taps
from audiokit.train.data import PEAK_LIMIT, CropDataset, normalise_level

MU = 255.0
A = 87.6


@dataclass
class DegradationConfig:
    """How inputs are band-limited; frequencies in Hz, SNRs in dB, probabilities in [0, 1]."""

    telephone_probability: float = 0.7
    telephone_cutoff_hz: list[float] = field(default_factory=lambda: [3400.0, 4000.0])
    wideband_cutoff_hz: list[float] = field(default_factory=lambda: [3500.0, 7000.0])
    g711_probability: float = 0.4
    noise_probability: float = 0.2
    noise_snr_db: list[float] = field(default_factory=lambda: [30.0, 50.0])


def mu_law(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law round trip of ``x`` in [-1, 1]: compress, quantise to 8 bits (sign + 7), expand."""
    y = np.round(np.log1p(MU * np.abs(x)) / np.log1p(MU) * 127.0) / 127.0
    return (np.sign(x) * np.expm1(y * np.log1p(MU)) / MU).astype(np.float32)


def a_law(x: np.ndarray) -> np.ndarray:
    """G.711 A-law round trip of ``x`` in [-1, 1]: compress, quantise to 8 bits (sign + 7), expand."""
    ax = np.abs(x)
    scale = 1.0 + np.log(A)
    y = np.where(ax < 1 / A, A * ax, 1 + np.log(np.maximum(A * ax, 1.0))) / scale
    y = np.round(y * 127.0) / 127.0
    expanded = np.where(y < 1 / scale, y * scale / A, np.exp(y * scale - 1) / A)
    return (np.sign(x) * expanded).astype(np.float32)


def upsample_2x(x: np.ndarray, taps_per_phase: int, cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """``(C, T)`` -> ``(C, 2 T)`` with :func:`~audiokit.nn.resample.lowpass_taps`, delay removed."""
    taps = lowpass_taps(2, taps_per_phase, cutoff)
    stuffed = np.zeros((x.shape[0], 2 * x.shape[1]))
    stuffed[:, ::2] = x
    delay = (taps.size - 1) // 2
    y = scipy.signal.fftconvolve(stuffed, taps[None], axes=-1)
    return y[:, delay : delay + stuffed.shape[1]].astype(np.float32)


class NarrowbandDataset(CropDataset):
    """Batches of ``{"input", "clean", "edge_hz"}`` indexed by step (see the module docstring)."""

    def __init__(
        self,
        *args,
        degradation: DegradationConfig,
        taps_per_phase: int = 32,
        cutoff: float = DEFAULT_CUTOFF,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.degradation = degradation
        self.taps_per_phase = taps_per_phase
        self.cutoff = cutoff

    def _lowpass(self, rng: np.random.Generator, wav: np.ndarray, cutoff_hz: float) -> np.ndarray:
        order = int(rng.integers(4, 11))
        kind = rng.choice(["butter", "cheby1", "ellip"])
        wn = cutoff_hz / (self.sample_rate / 2)
        if kind == "butter":
            sos = scipy.signal.butter(order, wn, output="sos")
        elif kind == "cheby1":
            sos = scipy.signal.cheby1(order, rng.uniform(0.1, 1.0), wn, output="sos")
        else:
            sos = scipy.signal.ellip(order, rng.uniform(0.1, 1.0), rng.uniform(40, 80), wn, output="sos")
        return scipy.signal.sosfilt(sos, wav, axis=-1).astype(np.float32)

    def item(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """``(input, target, edge_hz)`` of item ``index`` of batch ``step``."""
        cfg, deg = self.config, self.degradation
        rng = np.random.default_rng([self.seed, self.rank, step, index])
        clean = self._crop(rng, self.clips, self._weights).astype(np.float32)
        clean = normalise_level(clean, self.sample_rate, cfg.loudness, cfg.target_level_db)
        clean = clean * np.float32(10.0 ** (rng.uniform(*cfg.gain_db) / 20.0))
        if rng.random() < cfg.eq_probability:
            clean = self._equalise(rng, clean)
        peak = float(np.abs(clean).max())
        if peak > PEAK_LIMIT:
            clean = clean * np.float32(PEAK_LIMIT / peak)
        if rng.random() < deg.telephone_probability:
            narrow = self._lowpass(rng, clean, rng.uniform(*deg.telephone_cutoff_hz))[:, ::2]
            if rng.random() < deg.g711_probability:
                narrow = (mu_law if rng.random() < 0.5 else a_law)(np.clip(narrow, -1, 1))
            x, edge = narrow, NARROWBAND_EDGE_HZ
        else:
            edge = float(rng.uniform(*deg.wideband_cutoff_hz))
            x = self._lowpass(rng, clean, edge)
        if rng.random() < deg.noise_probability and np.any(x):
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            level = rms * 10.0 ** (-rng.uniform(*deg.noise_snr_db) / 20.0)
            x = x + (rng.standard_normal(x.shape) * level).astype(np.float32)
        if x.shape[-1] != clean.shape[-1]:
            x = upsample_2x(x, self.taps_per_phase, self.cutoff)
        return x.astype(np.float32), clean, edge

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.item(step, i) for i in range(self.config.batch_size)]
        return {
            "input": torch.from_numpy(np.stack([x for x, _, _ in items])),
            "clean": torch.from_numpy(np.stack([c for _, c, _ in items])),
            "edge_hz": torch.tensor([e for _, _, e in items], dtype=torch.float32),
        }
