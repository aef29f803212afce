"""What float16 or int8 weights cost the shipped codec: the same validation files coded by
``speech-16k`` with its float32 weights and with its matrices rounded to float16 values or to int8
levels (``set_weight_precision``), at 1.5, 3 and 6 kbps: every metric of ``score_pair`` for both, the
paired differences (mean and 95 % confidence half-width), and how many codes differ.

Usage: ``python benchmarks/codec_weight_precision.py [--precision float16|int8] [--glob 'vm-*'] [--out
result.json]`` (the card's validation files:
``$AUDIOKIT_DATA/corpus/16000/valid/speech/asterisk-core-sounds-fr-g722``; kernels/README.md, "Float16
and int8 weights").
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from audiokit.data.paths import data_root
from audiokit.evaluation import score_pair
from audiokit.io import load
from audiokit.models import Codec

METRICS = ("pesq", "stoi", "si_sdr", "mel_distance")
BITRATES = (1500, 3000, 6000)


def paired(values: list[float], reference: list[float]) -> dict:
    """Mean difference and its 95 % confidence half-width over the files both score."""
    diff = np.asarray(values) - np.asarray(reference)
    diff = diff[np.isfinite(diff)]
    return {"mean": float(diff.mean()), "ci95": float(1.96 * diff.std(ddof=1) / math.sqrt(len(diff)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="speech-16k")
    parser.add_argument("--precision", choices=("float16", "int8"), default="float16")
    parser.add_argument("--glob", default="vm-*")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = data_root() / "corpus" / "16000" / "valid" / "speech" / "asterisk-core-sounds-fr-g722"
    files = sorted(p for p in folder.rglob(args.glob) if p.is_file())
    models = {
        "float32": Codec.from_pretrained(args.model).eval(),
        args.precision: Codec.from_pretrained(args.model).eval().set_weight_precision(args.precision),
    }
    scores: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    codes_differing = defaultdict(int)
    codes_total = defaultdict(int)
    for path in files:
        audio, _ = load(path, 16000, 1)  # (1, T)
        for bitrate in BITRATES:
            codes = {}
            for precision, codec in models.items():
                with torch.inference_mode():
                    codes[precision] = codec.encode(audio[None], bitrate)
                    decoded = codec.decode(codes[precision])[0]
                row = score_pair(audio, decoded, 16000)
                for metric in METRICS:
                    scores[bitrate][precision][metric].append(row[metric])
            codes_differing[bitrate] += int((codes["float32"].codes != codes[args.precision].codes).sum())
            codes_total[bitrate] += codes["float32"].codes.numel()
    result = {"model": args.model, "precision": args.precision, "files": len(files), "glob": args.glob}
    result["bitrates"] = {}
    for bitrate in BITRATES:
        by_precision = scores[bitrate]
        result["bitrates"][str(bitrate)] = {
            "mean": {p: {m: float(np.nanmean(v)) for m, v in s.items()} for p, s in by_precision.items()},
            f"{args.precision}_minus_float32": {
                m: paired(by_precision[args.precision][m], by_precision["float32"][m]) for m in METRICS
            },
            "codes_differing": codes_differing[bitrate] / codes_total[bitrate],
        }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
