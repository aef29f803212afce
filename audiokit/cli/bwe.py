"""``audiokit bwe``: bandwidth extension of narrowband speech (telephone 8 kHz, or band-limited audio
at any rate) to the model's rate (:mod:`audiokit.bandwidth_extension`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from audiokit import io
from audiokit.bandwidth_extension import DEFAULT_MODEL, extend_file, load_extender
from audiokit.cli.batch import BandwidthWarning
from audiokit.cli.processing import FILES, add_file_command, run_jobs
from audiokit.models.bwe import BandwidthExtender


def run(args: argparse.Namespace) -> int:
    if args.input_rate is not None:
        io.check_sample_rate(args.input_rate, "--input-rate")
    options = {"input_rate": args.input_rate}
    too_wide = BandwidthWarning("writes", "the output")

    def extend(model: BandwidthExtender, source: Path, target: Path, **more) -> dict:
        done = extend_file(model, source, target, **options, **more)
        name = io.shown_name(source)
        too_wide.check(name, done["bandwidth_hz"], model.name, model.sample_rate)
        return done

    return run_jobs(args, load_extender, extend, options)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_file_command(
        subparsers,
        common,
        "bwe",
        run,
        (DEFAULT_MODEL, "bandwidth extender"),
        help="extend the bandwidth of narrowband speech (8 kHz telephone audio to 16 kHz)",
        description=f"Extend the bandwidth of {FILES} to the model's rate: each channel on its own, "
        "round(samples * model rate / input rate) samples out (at least 1). 8 kHz input goes through "
        "the model's own upsampler; other rates are resampled (soxr) and their band edge is measured on "
        "the whole file first (wideband input passes through unchanged; content above half the model's "
        "rate is not kept, with a warning).",
    )
    parser.add_argument(
        "--input-rate",
        type=int,
        metavar="HZ",
        help="treat the input as audio at HZ, resampled there first (8000: narrowband audio stored at a "
        "higher rate takes the telephone path; default: the file's own rate)",
    )
