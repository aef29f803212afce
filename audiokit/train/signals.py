"""SIGINT, SIGTERM and SIGHUP as a request to stop training after the current step."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType


class StopRequested(Exception):
    """A stop signal arrived inside :meth:`StopSignals.interruptible`: drop that work."""


class StopSignals:
    """While entered (on the main thread), SIGINT, SIGTERM and SIGHUP (a closed terminal; left ignored
    where it is, under ``nohup``) set :attr:`received` to the signal's name instead of acting; a second
    SIGINT or SIGTERM acts as usual, further SIGHUPs are ignored. The previous handlers return on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    NAMES = tuple(sig.name for sig in SIGNALS)
    """What :attr:`received` can be: the names of the stop signals."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}
        self._interruptible = False

    def __enter__(self) -> StopSignals:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: handler
                for sig in self.SIGNALS
                if (handler := signal.getsignal(sig)) is not signal.SIG_IGN or sig != signal.SIGHUP
            }
            for sig in self._previous:
                signal.signal(sig, self._stop)
        return self

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        # a second SIGINT/SIGTERM acts as usual (a double Ctrl-C); a closed terminal sends SIGHUP twice
        # (the shell's, then the kernel's to the foreground group), so further ones are ignored
        signal.signal(signum, signal.SIG_IGN if signum == signal.SIGHUP else self._previous[signum])
        if self._interruptible:
            raise StopRequested(self.received)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Work that a stop may drop (an evaluation: minutes of it would delay the stop): inside, a stop
        signal raises :class:`StopRequested` at once, as does one that had already arrived."""
        if self.received:
            raise StopRequested(self.received)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
