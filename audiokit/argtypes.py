"""argparse types of counts and amounts: a bad value is argparse's one usage line, exit code 2. Plain
functions, so that the speed scripts (which never import :mod:`audiokit.cli`) check their options alike."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from audiokit.threads import MAX_THREADS


def whole_number(lowest: int = 1, highest: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= lowest`` and ``<= highest`` (None: no limit; anything else is
    a usage error, exit code 2)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if number < lowest:
            raise argparse.ArgumentTypeError(f"{number} is below {lowest}")
        if highest is not None and number > highest:
            raise argparse.ArgumentTypeError(f"{number} is above {highest}")
        return number

    return parse


def finite_number(lowest: float = 0.0, above: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number ``> lowest`` (``above``) or ``>= lowest`` (anything else is a
    usage error, exit code 2)."""
    if lowest == 0:
        wanted = "a positive number" if above else "a non-negative number"
    else:
        wanted = f"a finite number {'>' if above else '>='} {lowest:g}"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not (math.isfinite(number) and (number > lowest if above else number >= lowest)):
            raise argparse.ArgumentTypeError(f"{value} is not {wanted}")
        return number

    return parse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads`` (torch threads, default 1; the CLI's ``use_threads`` applies it)."""
    parser.add_argument(
        "--threads",
        type=whole_number(1, MAX_THREADS),
        default=1,
        help=f"torch threads, 1-{MAX_THREADS} (default: 1, as bench and serve: the models are small and "
        "gain little from more, and threads that wait for busy cores make them many times slower)",
    )
