"""``audiokit enhance``: remove noise from speech with an enhancement model (:mod:`audiokit.enhancement`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiokit import io
from audiokit.cli.batch import run_batch
from audiokit.cli.options import (
    add_batch_options,
    add_force_option,
    add_model_option,
    add_raw_options,
    raw_format,
)
from audiokit.enhancement import DEFAULT_MODEL, check_knobs, enhance_file, enhance_jobs, load_enhancer


def run(args: argparse.Namespace) -> int:
    check_knobs(args.atten_lim_db, args.dry)
    raw = raw_format(args)
    jobs = enhance_jobs(args.input, args.output, args.suffix, args.glob)
    io.prepare_outputs(jobs, args.force)
    model, weights_hash = load_enhancer(args.model)

    def enhance(job: tuple[Path, Path]) -> dict:
        return enhance_file(model, job[0], job[1], args.atten_lim_db, args.dry, raw)

    batch = run_batch(
        jobs,
        enhance,
        "enhance",
        lambda job: "<stdin>" if io.is_stdio(job[0]) else str(job[0]),
        quiet=args.quiet,
        fail_fast=args.fail_fast,
    )
    seconds = sum(d["seconds"] for d in batch.done)
    compute = sum(d["compute_seconds"] for d in batch.done)
    speed = seconds / max(compute, 1e-9)
    out = sys.stderr if io.is_stdio(args.output) else sys.stdout  # stdout may carry the audio
    if args.json:
        summary = {
            "model": model.name,
            "model_spec": args.model,
            "weights_sha256": weights_hash,
            "atten_lim_db": args.atten_lim_db,
            "dry": args.dry,
            "seconds": round(seconds, 6),
            "compute_seconds": round(compute, 6),
            "realtime_factor": round(speed, 3),
            "done": len(batch.done),
            "failed": [{"path": name, "error": line} for name, line in batch.failed],
            "files": batch.done,
        }
        print(json.dumps(summary, indent=2), file=out)
    elif batch.failed or not args.quiet:
        print(
            f"enhance: {batch.count}; {seconds:.1f} s of audio in {compute:.1f} s ({speed:.0f}x real time) "
            f"with {model.name}",
            file=out,
        )
    return batch.exit_code


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "enhance",
        parents=[common],
        help="remove noise from speech (real-time enhancement model)",
        description="Enhance an audio file (any format/rate/channels; m4a, webm... through ffmpeg), a "
        "directory (mirrored; each bad file is one line and the rest are done) or - (stdin to stdout, "
        "WAV). Each channel is processed at the model's rate and written back at the input's rate, "
        "channel count and exact length.",
    )
    parser.add_argument("input", metavar="IN", help="audio file, directory, or - (stdin)")
    parser.add_argument("output", metavar="OUT", help="audio file (.wav/.flac/...), directory, or - (stdout)")
    add_model_option(parser, DEFAULT_MODEL, "enhancer")
    parser.add_argument(
        "--atten-lim-db",
        type=float,
        metavar="DB",
        help="attenuation limit: remove at most this many dB of noise (default: no limit)",
    )
    parser.add_argument(
        "--dry", type=float, default=0.0, help="wet/dry mix in [0, 1]: share of the input kept (default 0)"
    )
    parser.add_argument("--glob", default="*", help="with a directory: only files matching this pattern")
    parser.add_argument(
        "--suffix",
        help="output extension in a directory run (default: the input's, or .wav where it can't be written)",
    )
    add_batch_options(parser)
    add_force_option(parser)
    add_raw_options(parser)
    parser.set_defaults(handler=run)
