"""``audiokit info FILE...``: rate, channels, duration, codec, peak, RMS and bandwidth of audio files."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from audiokit import io
from audiokit.dsp import BandwidthEstimator
from audiokit.progress import progress


def describe(path: Path) -> dict:
    """Header facts plus peak/RMS (dBFS) and estimated bandwidth (Hz), read in constant memory."""
    header = io.info(path)
    estimator = BandwidthEstimator(header.sample_rate)
    peak, energy, count = 0.0, 0.0, 0
    for block in io.iter_blocks(path):
        peak = max(peak, float(block.abs().max()))
        energy += float(block.double().square().sum())
        count += block.numel()
        estimator.update(block)
    rms = math.sqrt(energy / count)
    return {
        "path": str(path),
        "sample_rate": header.sample_rate,
        "channels": header.channels,
        "samples": count // header.channels,
        "duration_s": round(count / header.channels / header.sample_rate, 6),
        "codec": f"{header.format}/{header.subtype}",
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
        "rms_dbfs": round(20 * math.log10(rms), 2) if rms > 0 else None,
        "bandwidth_hz": round(estimator.result(), 1),
    }


def _fmt_db(value: float | None) -> str:
    return "-inf" if value is None else f"{value:.1f}"


def run(args: argparse.Namespace) -> int:
    rows = [describe(Path(p)) for p in progress(args.files, "info", quiet=args.quiet)]
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
        "info", parents=[common], help="describe audio files", description=__doc__.split(":", 1)[1].strip()
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (an object, or a list for several files)"
    )
    parser.set_defaults(handler=run)
