"""The command line the speed scripts share (``bench_codec.py``, ``bench_enhancer.py``, ``bench_bwe.py``):
``[--json] [-m MODEL] [--threads N] [--out FILE]``, the JSON result saved under ``benchmarks/results/``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from audiokit.argtypes import add_threads_option
from audiokit.errors import AudiokitError
from audiokit.provenance import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str, default_model: str, result_name: str) -> argparse.ArgumentParser:
    """The shared options; the script may add its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "-m", "--model", default=default_model, help=f"model to time (default {default_model})"
    )
    add_threads_option(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / result_name, help="result file")
    return parser


def run(
    cli: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], dict],
    summary_lines: Callable[[dict], list[str]],
) -> None:
    """Parse the command line, ``measure`` with it, write the result to ``--out`` and print it
    (``--json``) or its summary lines; a bad model (or other user error) is one line, exit 1."""
    args = cli.parse_args()
    try:
        result = measure(args)
    except AudiokitError as error:
        cli.exit(1, f"{cli.prog}: error: {error}\n")
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {args.out}")
