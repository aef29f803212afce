"""Enhancer speed next to RNNoise's in the same run (the figures of ``audiokit bench -m enhance-16k``,
:mod:`audiokit.bench.enhancer`), saved to ``benchmarks/results/enhancer_speed.json``.

Usage: ``python benchmarks/bench_enhancer.py [--json] [-m MODEL] [--threads N]``; untrained weights of
the same architecture are timed while none are shipped. ``audiokit bench --help`` has the finer settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiokit.bench import enhancer_summary_lines, run_enhancer_benchmark
from audiokit.provenance import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-m", "--model", default="enhance-16k", help="enhancer to measure (default enhance-16k)"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "enhancer_speed.json", help="result file")
    args = parser.parse_args()
    result = run_enhancer_benchmark(model=args.model, threads=args.threads)
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(enhancer_summary_lines(result)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
