"""The ``audiokit`` command line: one module per subcommand, each with ``register(subparsers, common)``.

User errors (bad files, bad arguments, missing tools) end as one line on stderr and a non-zero exit
code, never a traceback; set ``AUDIOKIT_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from audiokit import __version__
from audiokit.errors import AudiokitError

COMMANDS = ("info", "eval", "coding", "data", "train", "checkpoint", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The full ``audiokit`` parser with every subcommand registered."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or informational output")
    parser = argparse.ArgumentParser(
        prog="audiokit", description="Neural audio coding and real-time audio processing."
    )
    parser.add_argument("--version", action="version", version=f"audiokit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"audiokit.cli.{name}").register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``audiokit`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except AudiokitError as exc:
        print(f"audiokit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"audiokit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless debugging
        if os.environ.get("AUDIOKIT_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(
            f"audiokit {args.command}: internal error: {type(exc).__name__}: {message} "
            "(rerun with AUDIOKIT_DEBUG=1 for a traceback and please report it)",
            file=sys.stderr,
        )
        return 70
