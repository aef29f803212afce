"""Where a codec's PESQ goes: its magnitudes or its phase (oracle swaps of STFT magnitude and phase).

For each clip, code it at ``--bitrate`` and score with PESQ-WB four signals against the original:
the decoded audio, the decoded STFT magnitude with the original's phase, the original magnitude
with the decoded phase (512-point Hann STFT, hop 128, 16 kHz), and the decoded magnitude with a phase
rebuilt from it alone (:func:`pghi_phase`, 512-point Gaussian STFT, hop 128). A large gain from the
original phase means the decoder's phase limits the score; the rebuilt phase tells whether the decoded
magnitudes would give a better one by themselves.

Usage: ``python benchmarks/phase_oracle.py --weights speech-16k --valid DIR --glob 'vm-*'
[--every 10] [--bitrate 6000] [--out benchmarks/results/phase_oracle.json]``
"""

from __future__ import annotations

import argparse
import heapq
from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.evaluation import metrics
from audiokit.models import Codec
from audiokit.provenance import run_info, write_json

N_FFT, HOP = 512, 128


def _stft(wav: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Complex STFT (Hann window unless ``window``)."""
    window = torch.hann_window(N_FFT, dtype=wav.dtype) if window is None else window
    return torch.stft(wav, N_FFT, HOP, window=window, return_complex=True)


def _istft(spec: torch.Tensor, length: int, window: torch.Tensor | None = None) -> np.ndarray:
    """Inverse of :func:`_stft` with the same window, ``length`` samples."""
    window = torch.hann_window(N_FFT, dtype=spec.real.dtype) if window is None else window
    return torch.istft(spec, N_FFT, HOP, window=window, length=length).numpy()


GAUSS_LAMBDA = 0.25645 * N_FFT**2
"""Time-frequency spread of :func:`gaussian_window` (samples^2): ``exp(-pi t^2 / lambda)`` about the
frame's centre, the width that suits a window of ``N_FFT`` samples (Prusa et al. 2017)."""


def gaussian_window() -> torch.Tensor:
    """``(N_FFT,)`` float64 Gaussian window centred at ``N_FFT / 2``."""
    t = torch.arange(N_FFT, dtype=torch.float64) - N_FFT / 2
    return torch.exp(-torch.pi * t**2 / GAUSS_LAMBDA)


def gaussian_stft(wav: np.ndarray) -> np.ndarray:
    """``(N_FFT // 2 + 1, frames)`` complex STFT of ``wav`` (samples) with :func:`gaussian_window`."""
    return _stft(torch.as_tensor(wav, dtype=torch.float64), gaussian_window()).numpy()


def gaussian_istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`gaussian_stft`, ``length`` samples (float32)."""
    return _istft(torch.as_tensor(spec), length, gaussian_window()).astype(np.float32)


def pghi_phase(magnitude: np.ndarray, floor_nepers: float = 10.0) -> np.ndarray:
    """Phase ``(bins, frames)`` (radians) for a :func:`gaussian_stft` magnitude, by phase-gradient heap
    integration (Prusa, Balazs, Sondergaard 2017). Under a Gaussian window the phase's derivatives follow
    from the log-magnitude's: with ``s = log|X|``, frequency ``w`` in cycles a sample and time ``x`` in
    samples, ``dphase/dx = 2 pi w + (1 / lambda) ds/dw`` and ``dphase/dw = -lambda ds/dx - pi N_FFT``
    (the frame's phase is taken at its start, the window's centre ``N_FFT / 2`` later). From the
    loudest coefficient outwards, each neighbour gets its phase by the trapezoid rule; coefficients more
    than ``floor_nepers`` below the loudest keep a fixed random phase."""
    bins, _ = magnitude.shape
    s = np.log(magnitude + 1e-12)
    per_sample = 2 * np.pi * np.arange(bins)[:, None] / N_FFT + np.gradient(s, axis=0) * N_FFT / GAUSS_LAMBDA
    per_cycle = -GAUSS_LAMBDA * np.gradient(s, axis=1) / HOP - np.pi * N_FFT
    phase = np.random.default_rng(0).uniform(-np.pi, np.pi, magnitude.shape)
    done = s <= s.max() - floor_nepers
    while not done.all():
        start = np.unravel_index(np.argmax(np.where(done, -np.inf, s)), s.shape)
        phase[start], done[start] = 0.0, True
        heap = [(-s[start], start)]
        while heap:
            _, (b, f) = heapq.heappop(heap)
            for nb, nf in ((b, f + 1), (b, f - 1), (b + 1, f), (b - 1, f)):
                if 0 <= nb < bins and 0 <= nf < s.shape[1] and not done[nb, nf]:
                    if nf != f:
                        step = (per_sample[b, f] + per_sample[nb, nf]) / 2 * HOP * (nf - f)
                    else:
                        step = (per_cycle[b, f] + per_cycle[nb, nf]) / 2 * (nb - b) / N_FFT
                    phase[nb, nf], done[nb, nf] = phase[b, f] + step, True
                    heapq.heappush(heap, (-s[nb, nf], (nb, nf)))
    return phase


def with_pghi_phase(wav: np.ndarray) -> np.ndarray:
    """``wav``'s Gaussian STFT magnitude with :func:`pghi_phase`, back to samples (same length)."""
    magnitude = np.abs(gaussian_stft(wav))
    return gaussian_istft(magnitude * np.exp(1j * pghi_phase(magnitude)), len(wav))


def oracle_scores(codec: Codec, wav: np.ndarray, bitrate: float) -> dict[str, float]:
    """PESQ-WB of ``coded``, ``coded_magnitude_original_phase``, ``original_magnitude_coded_phase`` and
    ``coded_magnitude_pghi_phase``.

    ``wav``: ``(samples,)`` float32 at the codec's sample rate (16 kHz).
    """
    original = torch.from_numpy(wav)
    with torch.no_grad():
        coded = codec.decode(codec.encode(original[None, None], bitrate))[0, 0, : len(wav)]
    ref, est = _stft(original), _stft(coded)
    signals = {
        "coded": coded.numpy(),
        "coded_magnitude_original_phase": _istft(est.abs() * torch.exp(1j * ref.angle()), len(wav)),
        "original_magnitude_coded_phase": _istft(ref.abs() * torch.exp(1j * est.angle()), len(wav)),
        "coded_magnitude_pghi_phase": with_pghi_phase(coded.numpy()),
    }
    return {name: metrics.pesq(wav, signal, codec.sample_rate).score for name, signal in signals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="model name or directory/file of weights")
    parser.add_argument("--valid", type=Path, required=True, help="folder of validation audio")
    parser.add_argument("--glob", default="*.flac", help="file pattern under --valid (recursive)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th file (sorted)")
    parser.add_argument("--bitrate", type=float, default=6000.0, help="bits/s")
    parser.add_argument("--out", type=Path, help="write the per-file and mean scores as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec.from_pretrained(args.weights).eval()
    files = sorted(args.valid.rglob(args.glob))[:: args.every]
    if not files:
        raise SystemExit(f"{args.valid}: no files match {args.glob!r}")
    rows = {}
    for path in files:
        wav = io.load(path, sample_rate=codec.sample_rate, channels=1)[0][0].numpy()
        rows[path.name] = oracle_scores(codec, wav, args.bitrate)
        print(path.name, " ".join(f"{v:.3f}" for v in rows[path.name].values()), flush=True)
    names = next(iter(rows.values()))
    means = {name: float(np.nanmean([row[name] for row in rows.values()])) for name in names}
    for name, value in means.items():
        print(f"mean PESQ-WB {name}: {value:.3f}")
    if args.out:
        result = {"weights": str(args.weights), "bitrate": args.bitrate, "files": len(rows)}
        write_json(args.out, {**run_info(), **result, "mean": means, "per_file": rows})


if __name__ == "__main__":
    main()
