"""Codec weights against one another on the validation speech: each system's PESQ-WB, STOI and mel
distance per file at each bitrate (through ``.akc`` files, as ``audiokit eval --codec`` scores them), and
each system's paired differences against the first (mean and 95 % confidence half-width over files).

Usage: ``python benchmarks/codec_paired.py speech-16k RUN/model.safetensors ... [--bitrates 1.5 3 6]
[--valid DIR] [--glob 'vm-*'] [--jobs 2] [--opus 6] [--out result.json]`` (shipped names, run
directories or ``.safetensors`` files; the first is the reference; ``--opus K`` adds Opus at K kbps,
paired against the reference at every bitrate, as the card compares lower rates with Opus 6 kbps).
The default files are the card's 114 validation prompts (docs/models/speech-16k.md).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from audiokit.data.paths import data_root
from audiokit.evaluation.paired import EvalRequest, evaluate

METRICS = ("pesq", "stoi", "mel_distance")
VALID = "corpus/16000/valid/speech/asterisk-core-sounds-fr-g722"


def paired(values: dict[str, float], reference: dict[str, float]) -> dict:
    """Mean difference over the files both score (a file too short for STOI scores NaN) and its 95 %
    confidence half-width (normal approximation)."""
    diff = np.array([values[f] - reference[f] for f in reference if f in values])
    diff = diff[np.isfinite(diff)]
    return {"mean": float(diff.mean()), "ci95": float(1.96 * diff.std(ddof=1) / math.sqrt(len(diff)))}


def scores(request: EvalRequest) -> dict[str, dict[str, float]]:
    """``{metric: {file: value}}`` of one evaluation."""
    rows, _ = evaluate(request)
    return {m: {row["file"]: float(row[m]) for row in rows} for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--bitrates", type=float, nargs="+", default=[1.5, 3.0, 6.0])
    parser.add_argument("--valid", type=Path, default=None, help=f"default: $AUDIOKIT_DATA/{VALID}")
    parser.add_argument("--glob", default="vm-*")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--opus", type=float, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    valid = args.valid or data_root() / VALID
    result: dict = {"valid": str(valid), "glob": args.glob, "reference": args.weights[0], "bitrates": {}}
    opus = None
    if args.opus:
        opus = scores(
            EvalRequest(ref=valid, baseline="opus", bitrate_kbps=args.opus, glob=args.glob, jobs=args.jobs)
        )
    for kbps in args.bitrates:
        by_system = {
            w: scores(EvalRequest(ref=valid, codec=w, bitrate_kbps=kbps, glob=args.glob, jobs=args.jobs))
            for w in args.weights
        }
        if opus:
            by_system[f"opus {args.opus:g} kbps"] = opus
        reference = by_system[args.weights[0]]
        entry = {}
        for system, values in by_system.items():
            entry[system] = {"mean": {m: float(np.nanmean(list(values[m].values()))) for m in METRICS}}
            if system != args.weights[0]:
                entry[system]["vs_reference"] = {m: paired(values[m], reference[m]) for m in METRICS}
        result["bitrates"][f"{kbps:g}"] = entry
        print(f"{kbps:g} kbps")
        for system, e in entry.items():
            shown = " / ".join(f"{e['mean'][m]:.4f}" for m in METRICS)
            diffs = e.get("vs_reference")
            diff = (
                "  ".join(f"{m} {d['mean']:+.4f} +- {d['ci95']:.4f}" for m, d in diffs.items())
                if diffs
                else ""
            )
            print(f"  {system}: {shown}  {diff}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
