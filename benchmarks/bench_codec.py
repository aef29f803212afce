"""Codec speed (the figures of ``audiokit bench``), saved to ``benchmarks/results/codec_speed.json``.

Usage: ``python benchmarks/bench_codec.py [--json] [--threads 1] [--model speech-16k] ...`` (the options
of ``audiokit bench``). Needs the ``bench`` extra (``pip install -e .[bench]``) for the EnCodec-24k
comparison, or ``--no-encodec``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiokit.cli.bench import add_arguments, benchmark_from_args, summary_lines
from audiokit.provenance import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS / "codec_speed.json", help="result file")
    args = parser.parse_args()
    result = benchmark_from_args(args)
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
