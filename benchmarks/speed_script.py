"""The command line the speed scripts share (``bench_codec.py``, ``bench_enhancer.py``, ``bench_bwe.py``):
``[--json] [-m MODEL] [--threads N] [--out FILE]``, the JSON result saved under ``benchmarks/results/``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from audiokit.provenance import write_json
from audiokit.threads import MAX_THREADS

RESULTS = Path(__file__).resolve().parent / "results"


def thread_count(value: str) -> int:
    """``--threads``: a whole number in 1..:data:`MAX_THREADS` (else argparse's usage line, exit 2)."""
    number = int(value)  # not a whole number: argparse reports the ValueError as an invalid value
    if not 1 <= number <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{number} is not in 1..{MAX_THREADS}")
    return number


def parser(doc: str, default_model: str, result_name: str) -> argparse.ArgumentParser:
    """The shared options; the script may add its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "-m", "--model", default=default_model, help=f"model to time (default {default_model})"
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=1,
        help=f"CPU threads, 1-{MAX_THREADS} (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / result_name, help="result file")
    return parser


def finish(args: argparse.Namespace, result: dict, summary_lines: Callable[[dict], list[str]]) -> None:
    """Write ``result`` to ``--out`` and print it (``--json``) or its summary lines."""
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {args.out}")
