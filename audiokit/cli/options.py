"""Options several commands share: the model (``-m/--model``), headerless PCM (``--raw-*``) and
``-f/--force`` (overwrite existing outputs)."""

from __future__ import annotations

import argparse

from audiokit.io import RAW_SAMPLE_FORMATS, RawFormat


def add_model_option(parser: argparse.ArgumentParser, default: str | None, what: str = "model") -> None:
    """``-m/--model``: a shipped name, a run directory or a ``.safetensors`` file."""
    shown = f"default {default}" if default else "default: the one named in the file"
    parser.add_argument(
        "-m",
        "--model",
        default=default,
        help=f"{what}: shipped name, run directory or .safetensors ({shown})",
    )


def add_raw_options(parser: argparse.ArgumentParser) -> None:
    """``--raw-rate/--raw-format/--raw-channels``: read every input as headerless PCM."""
    group = parser.add_argument_group("headerless PCM input (read every input file as raw samples)")
    group.add_argument("--raw-rate", type=int, metavar="HZ", help="sample rate of raw PCM input")
    group.add_argument(
        "--raw-format",
        choices=tuple(RAW_SAMPLE_FORMATS),
        default="s16le",
        metavar="FMT",
        help=f"sample format of raw input: {', '.join(RAW_SAMPLE_FORMATS)} (default s16le)",
    )
    group.add_argument(
        "--raw-channels", type=int, default=1, metavar="N", help="interleaved channels (default 1)"
    )


def raw_format(args: argparse.Namespace) -> RawFormat | None:
    """The :class:`RawFormat` the ``--raw-*`` options give, or None without ``--raw-rate``."""
    if args.raw_rate is None:
        return None
    return RawFormat(args.raw_rate, args.raw_format, args.raw_channels)


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """``-f/--force``: replace existing output files (inputs never: :func:`audiokit.io.check_outputs`)."""
    parser.add_argument(
        "-f", "--force", action="store_true", help="overwrite existing output files (never an input file)"
    )
