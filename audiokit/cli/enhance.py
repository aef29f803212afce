"""``audiokit enhance``: remove noise from speech with an enhancement model (:mod:`audiokit.enhancement`)."""

from __future__ import annotations

import argparse
import math
from functools import partial

from audiokit.cli.options import number_in
from audiokit.cli.processing import FILES, add_file_command, run_jobs
from audiokit.enhancement import DEFAULT_MODEL, enhance_file, load_enhancer


def run(args: argparse.Namespace) -> int:
    # inf means no limit, as None (the default) does; None keeps --json's settings valid JSON
    limit = None if args.atten_lim_db == math.inf else args.atten_lim_db
    options = {"atten_lim_db": limit, "dry": args.dry}
    return run_jobs(args, load_enhancer, partial(enhance_file, **options), options)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_file_command(
        subparsers,
        common,
        "enhance",
        run,
        (DEFAULT_MODEL, "enhancer"),
        help="remove noise from speech (real-time enhancement model)",
        description=f"Enhance {FILES}. Each channel is processed at the model's rate and written back "
        "at the input's rate, channel count and exact length.",
    )
    parser.add_argument(
        "--atten-lim-db",
        type=number_in(0.0, math.inf, "an attenuation limit in dB >= 0"),
        metavar="DB",
        help="attenuation limit: remove at most this many dB of noise (default: no limit; inf: no limit)",
    )
    parser.add_argument(
        "--dry",
        type=number_in(0.0, 1.0, "a wet/dry mix in [0, 1] (0: fully enhanced)"),
        default=0.0,
        help="wet/dry mix in [0, 1]: share of the input kept (default 0)",
    )
