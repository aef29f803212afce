"""Where a codec's PESQ goes: its magnitudes or its phase (oracle swaps of STFT magnitude and phase).

For each clip, code it at ``--bitrate`` and score with PESQ-WB three signals against the original:
the decoded audio, the decoded STFT magnitude with the original's phase, and the original magnitude
with the decoded phase (512-point Hann STFT, hop 128, 16 kHz). A large gain from the original phase
means the decoder's phase, not its magnitudes, limits the score.

Usage: ``python benchmarks/phase_oracle.py --weights speech-16k --valid DIR --glob 'vm-*'
[--every 10] [--bitrate 6000] [--out benchmarks/results/phase_oracle.json]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.evaluation import metrics
from audiokit.models import Codec
from audiokit.provenance import run_info, write_json

N_FFT, HOP = 512, 128


def _stft(wav: torch.Tensor) -> torch.Tensor:
    return torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)


def _istft(spec: torch.Tensor, length: int) -> np.ndarray:
    return torch.istft(spec, N_FFT, HOP, window=torch.hann_window(N_FFT), length=length).numpy()


def oracle_scores(codec: Codec, wav: np.ndarray, bitrate: float) -> dict[str, float]:
    """PESQ-WB of ``coded``, ``coded_magnitude_original_phase`` and ``original_magnitude_coded_phase``.

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
    }
    return {name: metrics.pesq(wav, signal, codec.sample_rate).score for name, signal in signals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
