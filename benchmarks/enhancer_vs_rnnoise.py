"""Where RNNoise beats an enhancer, on the fixed noisy validation set: per mixing SNR, PESQ-WB of both
as they are and with 3 s of the clip's own noise (time-reversed) in front (cut off again: does the
model need to hear the noise alone?), and per 20 ms frame, grouped by the clean frame's level below the
clip's loudest, the output's level against the clean speech and its SNR (dB), summed over the clips.

Usage: ``python benchmarks/enhancer_vs_rnnoise.py (--weights W.safetensors | --checkpoint
RUN/checkpoints/latest.pt) [--clips 80]``; prints JSON (docs/training.md, session 15).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import torch
from enhancer_diagnosis import load, parse_model_args

from audiokit.data.paths import data_root
from audiokit.evaluation import metrics
from audiokit.evaluation.baselines import rnnoise
from audiokit.train.tasks.enhance import read_noisy_set

LEVELS = ((0, 10), (10, 20), (20, 30), (30, 45), (45, 200))
"""Classes of 20 ms frames by the clean frame's level below the clip's loudest frame (dB)."""
PREFIX_SECONDS = 3.0
FRAME = 320


def frame_energies(x: np.ndarray) -> np.ndarray:
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return (frames**2).sum(1)


def main() -> None:
    _, args = parse_model_args(__doc__.split("\n\n")[0])
    torch.set_num_threads(1)
    model = load(args)
    rate = model.sample_rate
    listing = read_noisy_set("valid_noisy_16k", rate, args.clips, 6.0)
    clips = (data_root() / "valid_noisy_16k" / "clips.jsonl").read_text().splitlines()[: args.clips]
    snrs = [json.loads(line)["snr_db"] for line in clips]
    pesq: dict[tuple, list[float]] = defaultdict(list)
    frames: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(3))  # error, clean, output energies
    with torch.no_grad():
        for (_, pair), snr in zip(listing, snrs, strict=True):
            noisy, clean = pair[0], pair[1]
            prefix = torch.cat([(noisy - clean).flip(-1)] * 8, -1)[..., : round(PREFIX_SECONDS * rate)]
            length = noisy.shape[-1]
            outputs = {
                "ours": model.enhance(noisy[None])[0],
                "ours_after_noise": model.enhance(torch.cat([prefix, noisy], -1)[None])[0, :, -length:],
                "rnnoise": rnnoise(noisy, rate).wav,
                "rnnoise_after_noise": rnnoise(torch.cat([prefix, noisy], -1), rate).wav[:, -length:],
            }
            reference = clean[0].numpy()
            level = frame_energies(reference)
            below = 10 * np.log10(level.max() / np.maximum(level, 1e-20))
            for name, out in outputs.items():
                pesq[(snr, name)].append(metrics.pesq(clean, out, rate).score)
                if name.endswith("after_noise"):
                    continue
                y = out[0].numpy()
                error, output = frame_energies(y - reference), frame_energies(y)
                for low, high in LEVELS:
                    pick = (below >= low) & (below < high)
                    frames[(snr, name, low)] += [error[pick].sum(), level[pick].sum(), output[pick].sum()]
    names = ("ours", "ours_after_noise", "rnnoise", "rnnoise_after_noise")
    report: dict = {"clips": len(snrs), "pesq": {}, "frames": {}}
    for snr in sorted(set(snrs)):
        report["pesq"][f"{snr:g}"] = {name: round(float(np.nanmean(pesq[(snr, name)])), 3) for name in names}
        report["frames"][f"{snr:g}"] = {
            name: {
                f"{low}-{high} dB down": {
                    "output_vs_clean_db": _db(frames[(snr, name, low)][2], frames[(snr, name, low)][1]),
                    "snr_db": _db(frames[(snr, name, low)][1], frames[(snr, name, low)][0]),
                }
                for low, high in LEVELS
            }
            for name in ("ours", "rnnoise")
        }
    report["pesq"]["all"] = {
        name: round(float(np.nanmean([v for (_, n), vs in pesq.items() if n == name for v in vs])), 3)
        for name in names
    }
    print(json.dumps(report, indent=1))


def _db(a: float, b: float) -> float:
    return round(float(10 * np.log10(max(a, 1e-20) / max(b, 1e-20))), 2)


if __name__ == "__main__":
    main()
