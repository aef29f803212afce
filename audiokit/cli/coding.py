"""``audiokit encode`` / ``audiokit decode``: audio files to ``.akc`` bitstreams and back."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TextIO

from audiokit import io
from audiokit.argtypes import finite_number
from audiokit.bitstream import AkcReader
from audiokit.cli.batch import BandwidthWarning, Batch, problem_line, run_file_jobs
from audiokit.cli.options import (
    add_batch_options,
    add_force_option,
    add_model_option,
    add_raw_options,
    raw_format,
    sample_rate_hz,
    use_threads,
)
from audiokit.coding import (
    DEFAULT_MODEL,
    check_time_range,
    codec_bitrate,
    codec_for,
    decode_file,
    encode_file,
    entropy_model_of,
    load_codec,
    mirror_jobs,
)
from audiokit.errors import ModelError, UsageError
from audiokit.io import prepare_outputs
from audiokit.models.base import model_label


def _results_stream(output: str) -> TextIO:
    """Where results are printed: stdout, or stderr when stdout carries the audio or the codes (``-``,
    ``/dev/stdout``)."""
    return sys.stderr if io.carries_stdout(output) else sys.stdout


def _finish(batch: Batch, args: argparse.Namespace, what: str, text: str, data: dict) -> int:
    """Print the count (and what was done) as text or ``--json``; the exit code."""
    out = _results_stream(args.output)
    if args.json:
        failed = [{"path": name, "error": line} for name, line in batch.failed]
        summary = {**data, "done": len(batch.done), "failed": failed, "not_tried": batch.skipped}
        print(json.dumps(summary, indent=2), file=out)
    elif batch.failed or not args.quiet:
        print(f"{what}: {batch.count}{text}", file=out)
    return batch.exit_code


def _check_akc_output(target: str) -> None:
    if not io.is_stdio(target) and not io.writes_in_place(target) and Path(target).suffix.lower() != ".akc":
        raise UsageError(f"{target}: an .akc file name (or a folder ending in /, or - for stdout) is needed")


def run_encode(args: argparse.Namespace) -> int:
    use_threads(args)
    raw = raw_format(args)
    jobs = mirror_jobs(args.input, args.output, ".akc", args.glob)
    prepare_outputs(jobs, args.force)  # first: a data-loss refusal names both files
    single = io.is_stdio(args.input) or not Path(args.input).is_dir()
    if single and not str(args.output).endswith("/") and not Path(args.output).is_dir():
        _check_akc_output(args.output)
    codec, weights_hash = load_codec(args.model)
    bitrate = codec_bitrate(codec, args.bitrate, model=args.model)
    entropy = entropy_model_of(codec, weights_hash) if args.entropy else None
    too_wide = BandwidthWarning("codes", "the decoded audio")

    def encode(job: tuple[Path, Path]) -> dict:
        source, target = job
        done = encode_file(codec, source, target, bitrate, weights_hash, raw, args.rescale, entropy)
        name = io.shown_name(source)
        if done["peak"] > 1 and not args.rescale:
            print(
                f"warning: {name}: peak {20 * math.log10(done['peak']):+.1f} dBFS is above full scale and "
                "will clip when decoded; pass --rescale to scale it down",
                file=sys.stderr,
            )
        too_wide.check(name, done["bandwidth_hz"], codec.name, codec.sample_rate)
        return {"input": name, "output": str(target), **done}

    batch = run_file_jobs(jobs, encode, "encode", args)
    seconds = sum(d["seconds"] for d in batch.done)
    size = sum(d["bytes"] for d in batch.done)
    kbps = size * 8 / max(seconds, 1e-9) / 1000
    text = f"; {seconds:.1f} s of audio -> {size / 1024:.1f} KiB ({kbps:.2f} kbps with headers)"
    text += f" with {model_label(args.model, codec.name)}"
    data = {"model": codec.name, "bitrate_kbps": bitrate / 1000, "seconds": seconds, "bytes": size}
    return _finish(batch, args, "encode", text, {**data, "files": batch.done})


def run_decode(args: argparse.Namespace) -> int:
    use_threads(args)
    check_time_range(args.start, args.duration)
    suffix = io.suffix_option(".wav" if args.suffix is None else args.suffix)
    given = args.suffix is not None
    jobs = mirror_jobs(args.input, args.output, suffix, extensions=(".akc",), explicit_suffix=given)
    prepare_outputs(jobs, args.force)  # first: a data-loss refusal names both files
    for _, target in jobs:
        io.check_output_format(target, args.sample_rate, rate_option=True)
    chosen = load_codec(args.model) if args.model else None  # a bad -m is the command's error, not a file's
    options = (args.start, args.duration, args.sample_rate, args.rescale)

    def decode(job: tuple[Path, Path]) -> dict:
        source, target = job
        name = io.shown_name(source)
        try:
            with io.readable_path(source) as path:  # standard input is read once, here
                if chosen:
                    codec, weights_hash = chosen
                else:  # the weights the header names: the shipped ones, or an archived earlier version
                    with AkcReader(path) as reader:
                        codec, weights_hash = codec_for(reader.header)
                done = decode_file(codec, path, target, weights_hash, *options)
        except ModelError as exc:  # the weights or tables the file names are missing: say which file
            raise ModelError(problem_line(name, exc)) from None
        if done["clipped"]:
            shown = io.shown_output(target)
            print(
                f"warning: {shown}: {done['clipped']} sample(s) clipped at full scale; pass --rescale "
                "to scale the output down instead",
                file=sys.stderr,
            )
        return {"input": name, "output": str(target), **done}

    batch = run_file_jobs(jobs, decode, "decode", args)
    seconds = sum(d["seconds"] for d in batch.done)
    rates = sorted({d["sample_rate"] for d in batch.done})
    text = f"; {seconds:.1f} s of audio at {', '.join(map(str, rates)) or '-'} Hz"
    return _finish(batch, args, "decode", text, {"seconds": seconds, "files": batch.done})


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    enc = subparsers.add_parser(
        "encode",
        parents=[common],
        help="compress audio to .akc with a neural codec",
        description="Encode an audio file (any format/rate/channels; m4a, webm... through ffmpeg) or a "
        "directory (mirrored) to .akc. The .akc records the input's rate and length, which decode gives "
        "back. Use - for standard input or output.",
    )
    enc.add_argument("input", metavar="IN", help="audio file, directory, or - (stdin)")
    enc.add_argument("output", metavar="OUT", help=".akc file, directory (a trailing / makes one), or -")
    enc.add_argument(
        "-b",
        "--bitrate",
        type=finite_number(0.0),
        default=6.0,
        help="kbps per channel, one of the model's (default 6; stereo takes twice this)",
    )
    add_model_option(enc, DEFAULT_MODEL)
    enc.add_argument("--glob", default="*", help="with a directory: only files matching this pattern")
    enc.add_argument(
        "--entropy",
        action="store_true",
        help="entropy-code the codes with the model's learned integer prior (a version-3 .akc, about "
        "13-21 %% smaller for speech with speech-16k, the same decoded audio; see docs/bitstream.md)",
    )
    enc.add_argument(
        "--rescale",
        action="store_true",
        help="scale an input whose peak is above full scale down to 0.99 (like EnCodec's -r)",
    )
    add_force_option(enc)
    add_batch_options(enc)
    add_raw_options(enc)
    enc.set_defaults(handler=run_encode)
    dec = subparsers.add_parser(
        "decode",
        parents=[common],
        help="decode .akc to audio",
        description="Decode an .akc file (or a directory of them, mirrored) to audio at the encoded input's "
        "own rate and length (--sample-rate for another rate). Use - for standard input or output (WAV).",
    )
    dec.add_argument("input", metavar="IN", help=".akc file, directory, or - (stdin)")
    dec.add_argument(
        "output", metavar="OUT", help="audio file (.wav/.flac/...), directory (a trailing / makes one), or -"
    )
    dec.add_argument(
        "--start",
        type=finite_number(above=False),
        help="seconds: decode from here (reads only the chunks needed)",
    )
    dec.add_argument("--duration", type=finite_number(), help="seconds to decode from --start")
    dec.add_argument(
        "--sample-rate",
        type=sample_rate_hz,
        metavar="HZ",
        help="output rate in Hz (default: the encoded input's own rate)",
    )
    dec.add_argument(
        "--rescale",
        action="store_true",
        help="scale an output that would clip down to a 0.99 peak (EnCodec's -r; decodes twice)",
    )
    add_model_option(dec, None)
    add_force_option(dec)
    dec.add_argument("--suffix", help="output extension for directories (default .wav)")
    add_batch_options(dec)
    dec.set_defaults(handler=run_decode)
