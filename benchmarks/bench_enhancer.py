"""Enhancer speed next to RNNoise's in the same run (the figures of ``audiokit bench -m enhance-16k``,
:mod:`audiokit.bench.enhancer`), saved to ``benchmarks/results/enhancer_speed.json``.

Usage: ``python benchmarks/bench_enhancer.py [--json] [-m MODEL] [--threads N]``; untrained weights of
the same architecture are timed while none are shipped. ``audiokit bench --help`` has the finer settings.
"""

from __future__ import annotations

from speed_script import parser, run

from audiokit.bench import enhancer_summary_lines, run_enhancer_benchmark

if __name__ == "__main__":
    cli = parser(__doc__, "enhance-16k", "enhancer_speed.json")
    run(
        cli,
        lambda args: run_enhancer_benchmark(model=args.model, threads=args.threads),
        enhancer_summary_lines,
    )
