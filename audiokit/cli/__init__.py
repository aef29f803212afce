"""The ``audiokit`` command line: one module per subcommand, each with ``register(subparsers, common)``.

User errors (bad files, bad arguments, missing tools) end as one line on stderr and a non-zero exit
code, never a traceback; set ``AUDIOKIT_DEBUG=1`` to see tracebacks of unexpected errors. SIGINT and
SIGTERM (even while torch is importing) end in one line, exit code 130 / 143, and no temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import NoReturn, TextIO

from audiokit import __version__
from audiokit.errors import AudiokitError, PeerStopped


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that ``finally`` blocks remove temporary files."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _install_signal_handlers() -> dict[int, object]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted`; returns the handlers to restore."""
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, _interrupt)
        except ValueError:  # not the main thread: leave signals alone
            pass
    return previous


class _NamedStdout:
    """``sys.stdout`` whose write errors (a full disk behind ``> file``, ``/dev/full``) name ``<stdout>``:
    the system's error carries no file name, so the command's one line would name nothing."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        with _naming_stdout():
            return self.stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        with _naming_stdout():
            self.stream.writelines(lines)

    def flush(self) -> None:
        with _naming_stdout():
            self.stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _naming_stdout() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is not None or not exc.strerror:
            raise
        raise OSError(exc.errno, exc.strerror, "<stdout>") from exc


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """Remove temporary files, say so in one line; the exit code is 128 + the signal's number."""
    signum = getattr(exc, "signum", signal.SIGINT)
    for other in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the cleanup short
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            signal.signal(other, signal.SIG_IGN)
    io = sys.modules.get("audiokit.io")  # not imported yet: no temporary files either
    if io is not None:
        io.remove_temp_files()
    name = signal.Signals(signum).name
    print(f"{command}: interrupted ({name})", file=sys.stderr)
    return 128 + signum


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``audiokit encode: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


COMMANDS = (
    "info",
    "eval",
    "coding",
    "enhance",
    "bwe",
    "data",
    "train",
    "checkpoint",
    "bench",
    "demo",
    "card",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``audiokit`` parser with every subcommand registered."""
    common = Parser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or notes (results are still printed)"
    )
    parser = Parser(prog="audiokit", description="Neural audio coding and real-time audio processing.")
    parser.add_argument("--version", action="version", version=f"audiokit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"audiokit.cli.{name}").register(subparsers, common)
    return parser


@contextlib.contextmanager
def _imports_uncollected(freeze: bool) -> Iterator[None]:
    """No garbage collection within: importing torch and the commands makes some 10^5 objects that live
    as long as the process, and the collector's passes over them while they were being made (three
    full ones) took a third of a command's start-up (0.5 of 1.4 s CPU). ``freeze``: afterwards, leave
    those objects out of every later collection too (``gc.freeze``; else the first collections after
    the imports walk them all again). Only for the process's own command: it would also keep whatever
    garbage a caller of :func:`main` holds at that moment for good."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    if freeze:
        gc.freeze()


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s namespace for ``argv``; an argument no option takes is the error of the command it
    was given to (``audiokit enhance: error: unrecognized arguments: ...``)."""
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (`train --nproc-per-node` uses it)
    if extra:
        (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """Run ``audiokit`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code. ``program``:
    this is the process's own command (:func:`run`), which keeps the objects its imports made out of
    later garbage collections."""
    previous = _install_signal_handlers()
    command = "audiokit"
    stdout = sys.stdout
    if stdout is not None:  # None: stdout closed (`>&-`), where print() writes nothing
        sys.stdout = _NamedStdout(stdout)
    try:
        try:
            with _imports_uncollected(freeze=program):
                parser = build_parser()
            args = _parse(parser, argv)
        except SystemExit as exc:  # --help, --version, or a one-line usage error (exit code 2)
            return exc.code if isinstance(exc.code, int) else 0
        action = getattr(args, f"{args.command}_command", None)  # `data mix`: the action too
        command = f"audiokit {args.command}" + (f" {action}" if action else "")
        code = int(args.handler(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failing write still ends in one line
        return code
    except AudiokitError as exc:
        if not isinstance(exc, PeerStopped):  # the DDP process that failed has said why
            print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(command, exc)
    except BrokenPipeError:  # the reader of stdout went away (`audiokit ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # an unexpected failure: still one line unless debugging
        if isinstance(exc, OSError) and exc.strerror:  # the system refused (permissions, a full disk)
            where = f"{exc.filename}: " if exc.filename is not None else ""
            print(f"{command}: error: {where}{exc.strerror}", file=sys.stderr)
            return 1
        if os.environ.get("AUDIOKIT_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(
            f"{command}: internal error: {type(exc).__name__}: {message} "
            "(rerun with AUDIOKIT_DEBUG=1 for a traceback and please report it)",
            file=sys.stderr,
        )
        return 70
    finally:
        sys.stdout = stdout
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run() -> NoReturn:
    """The ``audiokit`` program: :func:`main`, then exit with its code. After an interruption, further
    SIGINT/SIGTERM are ignored until the process has ended: a second signal (a double Ctrl-C; ``timeout``
    signals the process, then its group) would otherwise break into the interpreter's shutdown (torch's
    exit hooks) with a traceback."""
    code = main(program=True)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)
