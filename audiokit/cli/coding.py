"""``audiokit encode`` / ``audiokit decode``: audio files to ``.akc`` bitstreams and back."""

from __future__ import annotations

import argparse
from pathlib import Path

from audiokit.cli.options import add_force_option, add_model_option, add_raw_options, raw_format
from audiokit.coding import (
    DEFAULT_MODEL,
    check_time_range,
    decode_file,
    encode_file,
    load_codec,
    mirror_jobs,
    model_of,
)
from audiokit.errors import UsageError
from audiokit.io import prepare_outputs
from audiokit.progress import progress


def run_encode(args: argparse.Namespace) -> int:
    if args.bitrate <= 0:
        raise UsageError(f"--bitrate must be positive, got {args.bitrate}")
    raw = raw_format(args)
    jobs = mirror_jobs(Path(args.input), Path(args.output), ".akc", args.glob)
    prepare_outputs(jobs, args.force)
    codec, weights_hash = load_codec(args.model)
    bitrate = args.bitrate * 1000
    codec.n_q_for_bitrate(bitrate)  # a clear error before any work
    seconds = size = 0.0
    for source, target in progress(jobs, "encode", quiet=args.quiet, label=lambda job: str(job[0])):
        done = encode_file(codec, source, target, bitrate, weights_hash, raw)
        seconds += done["seconds"]
        size += done["bytes"]
    if not args.quiet:
        print(
            f"encoded {len(jobs)} file(s), {seconds:.1f} s of audio -> {size / 1024:.1f} KiB "
            f"({size * 8 / max(seconds, 1e-9) / 1000:.2f} kbps with headers) with {codec.name}"
        )
    return 0


def run_decode(args: argparse.Namespace) -> int:
    check_time_range(args.start, args.duration)
    jobs = mirror_jobs(Path(args.input), Path(args.output), args.suffix, extensions=(".akc",))
    prepare_outputs(jobs, args.force)
    for source, target in progress(jobs, "decode", quiet=args.quiet, label=lambda job: str(job[0])):
        codec, weights_hash = load_codec(args.model or model_of(source))
        decode_file(codec, source, target, weights_hash, args.start, args.duration, args.sample_rate)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    enc = subparsers.add_parser(
        "encode",
        parents=[common],
        help="compress audio to .akc with a neural codec",
        description="Encode an audio file (any format/rate/channels; m4a, webm... through ffmpeg) or a "
        "directory (mirrored) to .akc.",
    )
    enc.add_argument("input", metavar="IN", help="audio file or directory")
    enc.add_argument("output", metavar="OUT", help=".akc file, or directory")
    enc.add_argument(
        "-b",
        "--bitrate",
        type=float,
        default=6.0,
        help="kbps per channel (default 6; stereo takes twice this)",
    )
    add_model_option(enc, DEFAULT_MODEL)
    enc.add_argument("--glob", default="*", help="with a directory: only files matching this pattern")
    add_force_option(enc)
    add_raw_options(enc)
    enc.set_defaults(handler=run_encode)
    dec = subparsers.add_parser(
        "decode",
        parents=[common],
        help="decode .akc to audio",
        description="Decode an .akc file (or a directory of them, mirrored) to audio at the model's rate.",
    )
    dec.add_argument("input", metavar="IN", help=".akc file or directory")
    dec.add_argument("output", metavar="OUT", help="audio file (.wav/.flac/...) or directory")
    dec.add_argument("--start", type=float, help="seconds: decode from here (reads only the chunks needed)")
    dec.add_argument("--duration", type=float, help="seconds to decode from --start")
    dec.add_argument("--sample-rate", type=int, help="resample the output to this rate (Hz)")
    add_model_option(dec, None)
    add_force_option(dec)
    dec.add_argument("--suffix", default=".wav", help="output extension for directories (default .wav)")
    dec.set_defaults(handler=run_decode)
