"""Running a command over many files: every good file is done, each bad one is one line on stderr
(``path: problem``), and a count ends the run (``12 done, 2 failed``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TextIO, TypeVar

from audiokit import io
from audiokit.errors import AudiokitError
from audiokit.progress import one_file, progress

BANDWIDTH_TOLERANCE = 1.1
"""An input's measured bandwidth may exceed a model's Nyquist frequency this much before a warning
(16 kHz material upsampled by ffmpeg's default resampler measures ~8.5 kHz: 1.06x)."""

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Batch(Generic[Result]):
    """The results of the good items, ``(name, problem)`` of the bad ones, and how many items were not
    tried (``--fail-fast`` stopped the run)."""

    done: list[Result] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0

    @property
    def count(self) -> str:
        """``"12 done, 2 failed"`` (``", 3 not tried"`` after a ``--fail-fast`` stop)."""
        tried = f"{len(self.done)} done, {len(self.failed)} failed"
        return f"{tried}, {self.skipped} not tried" if self.skipped else tried

    @property
    def exit_code(self) -> int:
        """0 when every item was done, else 1."""
        return 1 if self.failed else 0


def problem_line(name: str, exc: BaseException) -> str:
    """``name: problem`` for a user-facing error (its message already names the file, or gets ``name``)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else name
        message = f"{where}: {exc.strerror}"
    else:
        message = " ".join(str(exc).split())
    return message if message.startswith(name) else f"{name}: {message}"


def run_batch(
    items: Sequence[Item],
    work: Callable[[Item], Result],
    desc: str,
    name: Callable[[Item], str],
    *,
    quiet: bool = False,
    fail_fast: bool = False,
    raise_single: bool = True,
    errors: TextIO | None = None,
) -> Batch[Result]:
    """Call ``work`` on every item (progress shown unless ``quiet``); a user error (an
    :class:`AudiokitError` or an ``OSError``) on one item is printed as one line on ``errors``
    (stderr) and the run goes on, or with ``fail_fast`` stops there (the line says how many items were
    done; the rest count as not tried). When there is only one item and ``raise_single``, the error is
    raised instead (the CLI prints it as its one line; ``--json`` runs pass False, so their summary still
    names the failure)."""
    errors = errors or sys.stderr
    batch: Batch[Result] = Batch()
    for index, item in enumerate(progress(items, desc, quiet=quiet, label=name)):
        try:
            with one_file(len(items) == 1 and not quiet):
                batch.done.append(work(item))
        except (AudiokitError, OSError) as exc:
            if len(items) == 1 and raise_single:
                raise
            line = problem_line(name(item), exc)
            batch.failed.append((name(item), line))
            if fail_fast and len(items) > 1:
                line += f" (stopped by --fail-fast: {len(batch.done)} of {len(items)} done)"
            print(line, file=errors, flush=True)
            if fail_fast:
                batch.skipped = len(items) - index - 1
                break
    return batch


def run_file_jobs(
    jobs: Sequence[tuple[Path, Path]],
    work: Callable[[tuple[Path, Path]], Result],
    desc: str,
    args: argparse.Namespace,
) -> Batch[Result]:
    """:func:`run_batch` over ``(input, output)`` jobs, each named by its input (``<stdin>`` for ``-``),
    with the batch options of ``args``: ``-q``, ``--fail-fast``, and ``--json`` (whose summary names a
    single failed file, so that error is not raised)."""
    return run_batch(
        jobs,
        work,
        desc,
        lambda job: io.shown_name(job[0]),
        quiet=args.quiet,
        fail_fast=args.fail_fast,
        raise_single=not args.json,
    )


@dataclass
class BandwidthWarning:
    """Says once per run, on stderr, that an input holds content above what a model keeps: more than
    :data:`BANDWIDTH_TOLERANCE` times its Nyquist frequency, up to which the model ``does`` (e.g. "codes")
    and of which its ``output`` (e.g. "the decoded audio") keeps less."""

    does: str
    output: str
    warned: bool = False

    def check(self, name: str, bandwidth_hz: float | None, model: str, sample_rate: int) -> None:
        """Warn about input ``name`` of measured bandwidth ``bandwidth_hz`` (None: not measured) given to
        ``model``, which works at ``sample_rate`` Hz."""
        nyquist = sample_rate / 2
        if self.warned or (bandwidth_hz or 0) <= BANDWIDTH_TOLERANCE * nyquist:
            return
        self.warned = True
        print(
            f"warning: {name} has content up to ~{bandwidth_hz / 1000:.1f} kHz, but {model} {self.does} "
            f"up to {nyquist / 1000:g} kHz: {self.output} keeps less (warned once)",
            file=sys.stderr,
        )
