"""``audiokit bench``: codec speed on CPU (and GPU when present), measured side by side in one run:
offline real-time factors next to EnCodec-24k's architecture, the streaming cost per frame and its
floor, and how many real-time streams one core sustains (:mod:`audiokit.bench.codec`)."""

from __future__ import annotations

import argparse
import json

from audiokit.bench import run_benchmark, summary_lines
from audiokit.cli.options import add_model_option
from audiokit.coding import DEFAULT_MODEL
from audiokit.provenance import write_json


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(
        model=args.model,
        seconds=args.seconds,
        repeats=args.repeats,
        threads=args.threads,
        frames=args.frames,
        stream_counts=tuple(args.streams),
        encodec=not args.no_encodec,
    )
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.quiet:
        print("\n".join(summary_lines(result)))
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bench", parents=[common], help="measure codec speed", description=__doc__.split(":", 1)[1].strip()
    )
    add_model_option(parser, DEFAULT_MODEL, "codec to measure (untrained when no weights are shipped)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length for offline timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--frames", type=int, default=100, help="streaming frames timed per mode")
    parser.add_argument(
        "--streams", type=int, nargs="+", default=[1, 16, 64], help="concurrent stream counts"
    )
    parser.add_argument("--no-encodec", action="store_true", help="skip the EnCodec-24k comparison")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.set_defaults(handler=run)
