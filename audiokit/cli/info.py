"""``audiokit info FILE...``: rate, channels, duration, codec, peak, RMS and bandwidth of audio files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiokit.cli.options import add_raw_options, raw_format
from audiokit.evaluation.describe import describe
from audiokit.progress import progress


def _fmt_db(value: float | None) -> str:
    return "-inf" if value is None else f"{value:.1f}"


def run(args: argparse.Namespace) -> int:
    raw = raw_format(args)
    rows = [describe(Path(p), raw) for p in progress(args.files, "info", quiet=args.quiet, label=str)]
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return 0
    for row in rows:
        print(
            f"{row['path']}: {row['sample_rate']} Hz, {row['channels']} ch, {row['duration_s']:.3f} s "
            f"({row['samples']} samples), {row['codec']}, peak {_fmt_db(row['peak_dbfs'])} dBFS, "
            f"RMS {_fmt_db(row['rms_dbfs'])} dBFS, bandwidth ~{row['bandwidth_hz'] / 1000:.1f} kHz"
        )
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "info",
        parents=[common],
        help="describe audio files",
        description=__doc__.split(":", 1)[1].strip() + " Reads m4a/aac/mp4, webm and whatever else ffmpeg "
        "decodes, and headerless PCM with --raw-rate/--raw-format.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (an object, or a list for several files)"
    )
    add_raw_options(parser)
    parser.set_defaults(handler=run)
