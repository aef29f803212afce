"""Progress on stderr: a tqdm bar on a terminal, one line per item in logs and pipes, nothing if quiet;
within one file of a run of one file, a bar in seconds of audio on a terminal."""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")

_ONE_FILE = contextvars.ContextVar("one_file", default=False)
"""Whether the file being processed is a run's only one, and its progress is to be shown."""


def progress(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    quiet: bool = False,
    label: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield ``items``, reporting progress on stderr unless ``quiet`` or there is at most one item.

    On a terminal: a tqdm bar. Otherwise (a log file, a pipe): one line ``desc i/total: label(item)``
    as each item is taken (without ``label``: ``desc i/total``).
    """
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if quiet or (total is not None and total <= 1):
        yield from items
    elif sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
    else:
        count = "?" if total is None else total
        for index, item in enumerate(items, 1):
            name = f": {label(item)}" if label is not None else ""
            print(f"{desc} {index}/{count}{name}", file=sys.stderr, flush=True)
            yield item


@contextlib.contextmanager
def one_file(shown: bool) -> Iterator[None]:
    """Within it, :func:`audio_progress` shows a bar (when ``shown``: the run's only file, not quiet; the
    file-count progress of :func:`progress` says nothing for one file)."""
    token = _ONE_FILE.set(shown)
    try:
        yield
    finally:
        _ONE_FILE.reset(token)


def audio_progress(
    blocks: Iterable[torch.Tensor], sample_rate: int, total: int, name: str
) -> Iterable[torch.Tensor]:
    """``blocks`` (``(channels, n)`` audio at ``sample_rate`` Hz, ``total`` samples in all); inside
    :func:`one_file` with ``shown``, on a terminal, wrapped to show a tqdm bar of the seconds done, named
    ``name``. Decided here, not when the blocks are taken: a reader thread does not see the context."""
    if not (_ONE_FILE.get() and sys.stderr.isatty()):
        return blocks
    return _with_bar(blocks, sample_rate, total, name)


def _with_bar(
    blocks: Iterable[torch.Tensor], sample_rate: int, total: int, name: str
) -> Iterator[torch.Tensor]:
    done = 0
    seconds = math.ceil(total / sample_rate)
    with tqdm(total=seconds, desc=name, unit="s", leave=False, dynamic_ncols=True) as bar:
        for block in blocks:
            done += block.shape[-1]
            bar.update(min(done, total) // sample_rate - bar.n)
            yield block
