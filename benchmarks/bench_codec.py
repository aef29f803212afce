"""Codec speed (the figures of ``audiokit bench``, :mod:`audiokit.bench.codec`), saved to
``benchmarks/results/codec_speed.json``.

Usage: ``python benchmarks/bench_codec.py [--json] [--no-encodec] [-m MODEL] [--threads N]``. Needs the
``bench`` extra (``pip install -e .[bench]``) for the EnCodec-24k comparison, or ``--no-encodec``;
``audiokit bench --help`` has the finer settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiokit.bench import run_benchmark, summary_lines
from audiokit.provenance import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="speech-16k", help="codec to measure (default speech-16k)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--no-encodec", action="store_true", help="skip the EnCodec-24k comparison")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "codec_speed.json", help="result file")
    args = parser.parse_args()
    result = run_benchmark(model=args.model, threads=args.threads, encodec=not args.no_encodec)
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
