"""Speed benchmarks as library functions (``audiokit bench`` and ``benchmarks/*.py`` call them)."""

from audiokit.bench.codec import run_benchmark, summary_lines

__all__ = ["run_benchmark", "summary_lines"]
