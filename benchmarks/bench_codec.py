"""Codec speed (the figures of ``audiokit bench``, :mod:`audiokit.bench.codec`), saved to
``benchmarks/results/codec_speed.json``.

Usage: ``python benchmarks/bench_codec.py [--json] [--no-encodec] [-m MODEL] [--threads N]``. The
EnCodec-24k comparison needs ``pip install --no-deps encodec einops`` (as ``make bench`` does; without
``--no-deps`` pip pulls a torchaudio that breaks torch) and is skipped without it;
``audiokit bench --help`` has the finer settings.
"""

from __future__ import annotations

from speed_script import parser, run

from audiokit.bench import run_benchmark, summary_lines

if __name__ == "__main__":
    cli = parser(__doc__, "speech-16k", "codec_speed.json")
    cli.add_argument("--no-encodec", action="store_true", help="skip the EnCodec-24k comparison")
    run(
        cli,
        lambda args: run_benchmark(model=args.model, threads=args.threads, encodec=not args.no_encodec),
        summary_lines,
    )
