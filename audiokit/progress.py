"""Progress on stderr: a tqdm bar on a terminal, one line per item in logs and pipes, nothing if quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


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
