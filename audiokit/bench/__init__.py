"""Speed benchmarks as library functions (``audiokit bench`` and ``benchmarks/*.py`` call them)."""

from audiokit.bench.bwe import bwe_summary_lines, run_bwe_benchmark
from audiokit.bench.codec import (
    device_summary_lines,
    run_benchmark,
    run_device_kernel_benchmark,
    summary_lines,
)
from audiokit.bench.enhancer import enhancer_summary_lines, run_enhancer_benchmark

__all__ = [
    "bwe_summary_lines",
    "device_summary_lines",
    "enhancer_summary_lines",
    "run_benchmark",
    "run_bwe_benchmark",
    "run_device_kernel_benchmark",
    "run_enhancer_benchmark",
    "summary_lines",
]
