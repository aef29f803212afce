"""Enhancer training states against one another on the fixed noisy validation set: every metric of
``score_pair`` for each state's EMA weights on the same clips, and each state's paired differences
against the first (mean and 95 % confidence half-width), overall and per mixing SNR.

Usage: ``python benchmarks/enhancer_paired.py RUN/checkpoints/latest.pt OTHER/checkpoints/latest.pt ...
[--clips 197] [--stride 8] [--rnnoise] [--out result.json]`` (training states' EMA weights, or weights
files or shipped names such as ``enhance-16k``; the first is the reference;
``--rnnoise`` adds RNNoise on the same clips; docs/training.md, session 20). Every 8th clip of the set
spreads the 197 over all its voices (the first 80 clips are one voice).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from enhancer_diagnosis import load

from audiokit.data.paths import data_root
from audiokit.evaluation import score_pair
from audiokit.evaluation.baselines import rnnoise
from audiokit.train.tasks.enhance import read_noisy_set

METRICS = ("pesq", "stoi", "si_sdr")


def paired(values: list[float], reference: list[float]) -> dict:
    """Mean difference and its 95 % confidence half-width (normal approximation), over the clips both
    score (a clip too short for STOI scores NaN)."""
    diff = np.asarray(values) - np.asarray(reference)
    diff = diff[np.isfinite(diff)]
    return {"mean": float(diff.mean()), "ci95": float(1.96 * diff.std(ddof=1) / math.sqrt(len(diff)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--clips", type=int, default=197)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--rnnoise", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    listing = read_noisy_set("valid_noisy_16k", 16000, args.clips, 6.0, args.stride)
    rows = (data_root() / "valid_noisy_16k" / "clips.jsonl").read_text().splitlines()
    snr_of = {row["name"]: row["snr_db"] for row in map(json.loads, filter(str.strip, rows))}
    systems = {
        str(path): load(
            argparse.Namespace(weights=None if path.suffix == ".pt" else str(path), checkpoint=path)
        )
        for path in args.checkpoints
    }
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    snrs = []
    for name, pair in listing:
        noisy, clean = pair[0], pair[1]  # (1, T) each
        snrs.append(snr_of[name])
        outputs = {"noisy": noisy}
        with torch.inference_mode():
            for system, model in systems.items():
                outputs[system] = model(noisy[None])[0]
        if args.rnnoise:
            outputs["rnnoise"] = rnnoise(noisy, 16000).wav
        for system, out in outputs.items():
            row = score_pair(clean, out, 16000)
            for metric in METRICS:
                scores[system][metric].append(row[metric])
    reference = str(args.checkpoints[0])
    result = {"clips": len(snrs), "stride": args.stride, "reference": reference, "systems": {}}
    for system, by_metric in scores.items():
        entry = {"mean": {m: float(np.nanmean(v)) for m, v in by_metric.items()}}
        if system != reference:
            entry["vs_reference"] = {m: paired(v, scores[reference][m]) for m, v in by_metric.items()}
            entry["vs_reference_by_snr"] = {
                str(level): {
                    m: paired([v[i] for i in idx], [scores[reference][m][i] for i in idx])
                    for m, v in by_metric.items()
                }
                for level in sorted(set(snrs))
                if len(idx := [i for i, s in enumerate(snrs) if s == level]) > 1
            }
        result["systems"][system] = entry
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
