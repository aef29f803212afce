"""What the audio-to-audio commands (``enhance``, ``bwe``) share: run a model over ``(input, output)``
jobs with :func:`~audiokit.cli.batch.run_file_jobs` and print the summary (text or ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from audiokit import io
from audiokit.cli.batch import run_file_jobs
from audiokit.cli.options import (
    add_batch_options,
    add_force_option,
    add_model_option,
    add_raw_options,
    raw_format,
    use_threads,
)
from audiokit.models.base import AudioModel, model_label
from audiokit.processing import output_jobs

Model = TypeVar("Model", bound=AudioModel)


KEEP_FLOAT = "or give a float WAV input and WAV output (a float format is kept, unclipped)"


def warn_clipped(output: str, clipped: int, advice: str = KEEP_FLOAT) -> None:
    """The warning (stderr) for ``clipped`` samples above full scale in ``output``, if any."""
    if clipped:
        print(
            f"warning: {output}: {clipped} sample(s) above full scale clipped; lower the input's level"
            + (f", {advice}" if advice else ""),
            file=sys.stderr,
        )


def run_jobs(
    args: argparse.Namespace,
    load: Callable[[str], tuple[Model, str]],
    process: Callable[..., dict],
    settings: dict,
) -> int:
    """Make the ``(input, output)`` jobs of ``args`` and check their outputs before any work, load the
    model (``load(args.model)``: the model and its weights' sha256), do every job (``process(model,
    input, output, raw=raw)`` returns :func:`audiokit.processing.process_file`'s dict), then print one
    summary line, or with ``--json`` the model, ``settings``, speed, failures and per-file results; on
    stderr when stdout carries the audio. Returns the exit code."""
    use_threads(args)
    raw = raw_format(args)
    jobs = output_jobs(args.input, args.output, args.suffix, args.glob)
    io.prepare_outputs(jobs, args.force)
    model, weights_hash = load(args.model)

    def work(job: tuple[Path, Path]) -> dict:
        done = process(model, job[0], job[1], raw=raw)
        warn_clipped(done["output"], done["clipped"])
        return done

    batch = run_file_jobs(jobs, work, args.command, args)
    seconds = sum(d["seconds"] for d in batch.done)
    compute = sum(d["compute_seconds"] for d in batch.done)
    speed = seconds / max(compute, 1e-9)
    out = sys.stderr if io.carries_stdout(args.output) else sys.stdout  # stdout may carry the audio
    if args.json:
        summary = {
            "model": model.name,
            "model_spec": args.model,
            "weights_sha256": weights_hash,
            **settings,
            "seconds": round(seconds, 6),
            "compute_seconds": round(compute, 6),
            "realtime_factor": round(speed, 3),
            "done": len(batch.done),
            "failed": [{"path": name, "error": line} for name, line in batch.failed],
            "not_tried": batch.skipped,
            "files": batch.done,
        }
        print(json.dumps(summary, indent=2), file=out)
    elif batch.failed or not args.quiet:
        shown = f"{speed:.1f}" if speed < 10 else f"{speed:.0f}"  # 0.5x is not "0x" or "1x"
        print(
            f"{args.command}: {batch.count}; {seconds:.1f} s of audio in {compute:.1f} s "
            f"({shown}x real time) with {model_label(args.model, model.name)}",
            file=out,
        )
    return batch.exit_code


FILES = (
    "an audio file (any format/rate/channels; m4a, webm... through ffmpeg), a directory (mirrored; each "
    "bad file is one line and the rest are done) or - (stdin to stdout, WAV)"
)
"""What ``IN`` may be, for a command's description."""


def add_file_command(
    subparsers: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    model: tuple[str, str],
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """The parser of file command ``name`` run by ``handler``: ``IN OUT`` (``description`` names them
    with :data:`FILES`), ``-m/--model`` (``model``: its default and what it is), ``--glob``,
    ``--suffix``, ``--fail-fast``, ``--json``, ``--threads``, ``-f`` and the ``--raw-*`` options; the
    command adds its own."""
    parser = subparsers.add_parser(name, parents=[common], help=help, description=description)
    parser.set_defaults(handler=handler)
    default_model, what = model
    parser.add_argument("input", metavar="IN", help="audio file, directory, or - (stdin)")
    parser.add_argument("output", metavar="OUT", help="audio file (.wav/.flac/...), directory, or - (stdout)")
    add_model_option(parser, default_model, what)
    parser.add_argument("--glob", default="*", help="with a directory: only files matching this pattern")
    parser.add_argument(
        "--suffix",
        help="output extension in a directory run (default: the input's, or .wav where it can't be written)",
    )
    add_batch_options(parser)
    add_force_option(parser)
    add_raw_options(parser)
    return parser
