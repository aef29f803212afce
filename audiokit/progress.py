"""Progress bars (tqdm on stderr) that respect ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, quiet: bool = False) -> Iterator[T]:
    """Wrap ``items`` in a progress bar unless ``quiet`` (or there is only one item)."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    disable = quiet or (total is not None and total <= 1)
    yield from tqdm(items, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)
