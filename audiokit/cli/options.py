"""Options several commands share: the model (``-m/--model``), headerless PCM (``--raw-*``),
``-f/--force`` (overwrite existing outputs) and the argparse types of counts and amounts."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from audiokit.argtypes import add_threads_option, whole_number
from audiokit.errors import UsageError
from audiokit.io import RAW_SAMPLE_FORMATS, RawFormat, check_sample_rate


def add_model_option(parser: argparse.ArgumentParser, default: str | None, what: str = "model") -> None:
    """``-m/--model``: a shipped name, a run directory or a ``.safetensors`` file."""
    shown = f"default {default}" if default else "default: the one named in the file"
    parser.add_argument(
        "-m",
        "--model",
        default=default,
        help=f"{what}: shipped name (NAME@N: its shipped version N), run directory or .safetensors ({shown})",
    )


def add_raw_options(parser: argparse.ArgumentParser) -> None:
    """``--raw-rate/--raw-format/--raw-channels``: read every input as headerless PCM."""
    group = parser.add_argument_group("headerless PCM input (read every input file as raw samples)")
    group.add_argument("--raw-rate", type=int, metavar="HZ", help="sample rate of raw PCM input")
    group.add_argument(
        "--raw-format",
        choices=tuple(RAW_SAMPLE_FORMATS),
        metavar="FMT",
        help=f"sample format of raw input: {', '.join(RAW_SAMPLE_FORMATS)} (default s16le)",
    )
    group.add_argument(
        "--raw-channels", type=whole_number(1), metavar="N", help="interleaved channels (default 1)"
    )


def raw_format(args: argparse.Namespace) -> RawFormat | None:
    """The :class:`RawFormat` the ``--raw-*`` options give, or None without ``--raw-rate`` (then
    ``--raw-format`` or ``--raw-channels`` alone, which would be ignored, is a UsageError)."""
    if args.raw_rate is None:
        given = [name for name in ("format", "channels") if getattr(args, f"raw_{name}") is not None]
        if given:
            options = " and ".join(f"--raw-{name}" for name in given)
            raise UsageError(f"{options} describe headerless input: give its --raw-rate too")
        return None
    return RawFormat(args.raw_rate, args.raw_format or "s16le", args.raw_channels or 1)


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """``-f/--force``: replace existing output files (inputs never: :func:`audiokit.io.check_outputs`)."""
    parser.add_argument(
        "-f", "--force", action="store_true", help="overwrite existing output files (never an input file)"
    )


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """``--fail-fast`` (stop at the first bad file), ``--json`` (print the results as JSON) and
    ``--threads`` (torch threads; :func:`use_threads` applies it)."""
    parser.add_argument(
        "--fail-fast", action="store_true", help="stop at the first file that fails (default: do the rest)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    add_threads_option(parser)


def use_threads(args: argparse.Namespace) -> None:
    """Run torch's operations on ``args.threads`` threads."""
    import torch

    torch.set_num_threads(args.threads)


def doc_text(doc: str | None) -> str:
    """A command's ``--help`` description from its module docstring: the text after the first ``:``
    with reStructuredText markup (``:mod:`x```, ````x````) turned into plain words."""
    text = (doc or "").split(":", 1)[-1]
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())


def number_in(lowest: float, highest: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number in ``[lowest, highest]`` (``highest`` may be ``inf``), ``what`` naming
    it in the error (anything else is a usage error, exit code 2)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not lowest <= number <= highest:  # NaN fails too
            raise argparse.ArgumentTypeError(f"{value} is not {what}")
        return number

    return parse


def sample_rate_hz(value: str) -> int:
    """An argparse type for ``--sample-rate``: a whole number of Hz within what audiokit writes."""
    try:
        rate = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of Hz") from None
    try:
        check_sample_rate(rate)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sample-rate ")) from None
    return rate


def device_name(value: str) -> str:
    """An argparse type for ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (else a usage error, exit 2)."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", value) is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not cpu, cuda or cuda:N")
    return value
