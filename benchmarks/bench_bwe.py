"""Bandwidth-extender speed next to sinc (soxr) upsampling in the same run (the figures of
``audiokit bench -m bwe-8to16``, :mod:`audiokit.bench.bwe`), saved to ``benchmarks/results/bwe_speed.json``.

Usage: ``python benchmarks/bench_bwe.py [--json] [-m MODEL] [--threads N]``; untrained weights of the
same architecture are timed while none are shipped. ``audiokit bench --help`` has the finer settings.
"""

from __future__ import annotations

from speed_script import parser, run

from audiokit.bench import bwe_summary_lines, run_bwe_benchmark

if __name__ == "__main__":
    cli = parser(__doc__, "bwe-8to16", "bwe_speed.json")
    run(cli, lambda args: run_bwe_benchmark(model=args.model, threads=args.threads), bwe_summary_lines)
