"""A run directory's records: ``recipe.yaml``, ``run.json``, ``metrics.jsonl``, ``eval.jsonl``, TensorBoard.

``run.json`` holds the seed, the model name, one entry per session (start and end time and step,
why it stopped, how it started, commit, package versions, device, hardware, threads, processes, host,
command line) and the sha256 of every ``model.safetensors`` saved (``weights``: sha256 -> step);
:mod:`audiokit.evaluation.model_card` reads it. Only rank 0 keeps records.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from audiokit.dsp import mel_spectrogram
from audiokit.errors import UsageError
from audiokit.io import atomic_path
from audiokit.provenance import git_commit, package_versions
from audiokit.train.recipe import Recipe, dump_recipe
from audiokit.train.runtime import Runtime, hardware


def _quiet_tensorboard_thread_errors(args: threading.ExceptHookArgs) -> None:
    """A ``threading.excepthook`` that leaves the OSErrors of TensorBoard's writer thread (a full disk)
    unprinted: its writer raises them again on the next write or flush, in the training thread, where
    they end the run with one line. Every other thread's exception goes to Python's hook."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
        return
    threading.__excepthook__(args)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shown_command(argv: list[str]) -> list[str]:
    """``argv`` with the program as ``audiokit`` where it is audiokit (the entry point, or the
    ``audiokit/__main__.py`` of ``python -m audiokit`` and ``torchrun -m audiokit``)."""
    if not argv:
        return []
    program = Path(argv[0])
    if program.name == "audiokit" or (program.name == "__main__.py" and program.parent.name == "audiokit"):
        return ["audiokit", *argv[1:]]
    return list(argv)


RECORDS = ("run.json", "recipe.yaml", "metrics.jsonl", "eval.jsonl")
"""The records a run directory holds beside its checkpoint and weights."""
KILLED = "killed"
"""``stopped`` of a session that ended without recording it (SIGKILL, the out-of-memory killer, a power
loss), written when the run is resumed."""


def _purge(path: Path, step: int) -> None:
    """Keep only the lines of the JSONL records at ``path`` up to ``step`` (rewritten atomically)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) == len(lines):
        return
    if not kept:
        path.unlink()
        return
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _step_of(line: str) -> float:
    """The step of a record line; a line cut short by a crash counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def evaluated(run_dir: Path, step: int) -> bool:
    """Whether ``run_dir/eval.jsonl`` holds an evaluation at ``step``."""
    path = run_dir / "eval.jsonl"
    return path.is_file() and any(_step_of(line) == step for line in path.read_text().splitlines())


def _read_info(path: Path) -> dict:
    """The run record in ``path`` (``run.json``); one that is not (edited by hand, cut short by a copy) is
    a one-line :class:`~audiokit.errors.UsageError` naming it."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        problem = f"not readable JSON ({exc})"
    else:
        if isinstance(info, dict) and isinstance(info.get("sessions"), list):
            return info
        problem = "not a run record (no list of 'sessions')"
    raise UsageError(f"{path}: {problem}; repair it, or move it away to resume with a new record")


class RunRecords:
    """Writes the records of the run in ``run_dir`` from ``step`` on, the step the session starts at;
    ``tensorboard``: also TensorBoard event files (when the package is installed).

    What earlier sessions recorded after ``step`` is dropped (TensorBoard's ``purge_step``, which hides
    the events at and after it: ``step + 1``; and the lines of ``metrics.jsonl`` and ``eval.jsonl``): a
    session resumed from a checkpoint older than the crash logs those steps again, one resumed where the
    last ended keeps that step's logs and evaluation, and a new run (step 0) in a reused directory starts
    clean records.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, step: int) -> None:
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # the last step metrics.jsonl held before this session (None: none)
        logged = [_step_of(line) for line in _lines(run_dir / "metrics.jsonl")]
        self.last_logged_step = max((s for s in logged if s != float("inf")), default=None)
        for name in ("metrics.jsonl", "eval.jsonl"):
            _purge(run_dir / name, step)
        self.ended = False  # end_session has recorded this session's end
        # the previous session, resumed, when it ended without a record (its ``stopped`` now KILLED)
        self.killed_session: dict | None = None
        self.writer = None
        self.tensorboard_failed = False  # a write failed: closing the writer raises the same error again
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # said, not silently skipped: the user asked for event files
                print(
                    "audiokit train: note: run.tensorboard is on but TensorBoard is not installed "
                    "(pip install tensorboard); metrics.jsonl and eval.jsonl hold the same scalars",
                    file=sys.stderr,
                )
                return
            # the hook first: the writer's thread fails too when its first event cannot be written
            threading.excepthook = _quiet_tensorboard_thread_errors
            with self._writing_tensorboard():
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1)

    @contextmanager
    def _writing_tensorboard(self) -> Iterator[None]:
        """TensorBoard's write errors name its folder when raised without a file name, and their
        file as text when named in bytes (``b'.../events.out.tfevents...'``, a read-only folder)."""
        try:
            yield
        except OSError as exc:
            self.tensorboard_failed = True
            if isinstance(exc.filename, str) or not exc.strerror:
                raise
            where = self.run_dir / "tensorboard" if exc.filename is None else os.fsdecode(exc.filename)
            raise OSError(exc.errno, exc.strerror, str(where)) from exc

    def start_session(
        self, recipe: Recipe, model_name: str, runtime: Runtime, step: int, **start: Any
    ) -> None:
        """Write the resolved recipe and add a session to ``run.json``; ``start`` says how it started
        (``resumed``, ``init``, ``init_sha256``, ...)."""
        path = self.run_dir / "run.json"
        info = _read_info(path) if start.get("resumed") and path.is_file() else {"sessions": []}
        if info["sessions"] and not info["sessions"][-1].get("stopped"):
            # no other process holds the run (run_lock), so the one that wrote this session is gone
            self.killed_session = info["sessions"][-1]
            last = max(self.last_logged_step or 0, step)  # its last line, or the checkpoint resumed
            reached = last > self.killed_session.get("start_step", 0)
            self.killed_session.update(stopped=KILLED, ended=None, end_step=int(last) if reached else None)
        with atomic_path(self.run_dir / "recipe.yaml") as tmp:
            tmp.write_text(dump_recipe(recipe))
        info.update({"seed": recipe.run.seed, "model": model_name})
        info["sessions"].append(
            {
                "started": _now(),
                "start_step": step,
                **start,
                "command": shown_command(sys.argv),
                "commit": git_commit(),
                "versions": package_versions(),
                "device": str(runtime.device),
                "hardware": hardware(runtime.device),
                "threads": torch.get_num_threads(),
                "world_size": runtime.world_size,
                "host": platform.node(),
            }
        )
        self._write_info(info)

    def saved_weights(self, step: int, sha256: str) -> None:
        """Record in ``run.json`` (``weights``: sha256 -> step) that the weights ``sha256`` were saved at
        ``step``, so that a model card can tell this run's weights from others'."""
        info = json.loads((self.run_dir / "run.json").read_text())
        info.setdefault("weights", {})[sha256] = step
        self._write_info(info)

    def end_session(self, step: int, stopped: str) -> None:
        """Record when and at which step this session ended, and why, in ``run.json``."""
        info = json.loads((self.run_dir / "run.json").read_text())
        info["sessions"][-1].update(ended=_now(), end_step=step, stopped=stopped)
        self._write_info(info)
        self.ended = True

    def _write_info(self, info: dict) -> None:
        with atomic_path(self.run_dir / "run.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")

    def log(self, step: int, scalars: dict[str, float], vectors: dict[str, list[float]]) -> None:
        """Append ``scalars`` to ``metrics.jsonl``; TensorBoard gets them and each vector element
        (tag ``<name><index:02d>``)."""
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.writer is None:
            return
        with self._writing_tensorboard():
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
            for name, values in vectors.items():
                for index, value in enumerate(values):
                    self.writer.add_scalar(f"{name}{index:02d}", value, step)

    def log_evaluation(
        self,
        step: int,
        record: dict,
        scalars: dict[str, float],
        examples: list[tuple[str, torch.Tensor, int]],
    ) -> None:
        """Append ``{"step": step, **record}`` to ``eval.jsonl``; TensorBoard gets the scalars and the
        examples ``(tag, (channels, samples) audio, sample rate)`` as audio and log-mel images."""
        with open(self.run_dir / "eval.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **record}) + "\n")
        if self.writer is None:
            return
        with self._writing_tensorboard():
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
            for tag, wav, rate in examples:
                self.writer.add_audio(f"audio/{tag}", wav[0].clamp(-1, 1), step, sample_rate=rate)
                mel = mel_spectrogram(wav[0].double(), rate, 1024, 256, 80).clamp_min(1e-5).log10()
                image = ((mel - mel.min()) / (mel.max() - mel.min() + 1e-9)).flip(0).float()
                self.writer.add_image(f"mel/{tag}", image, step, dataformats="HW")

    def flush(self) -> None:
        if self.writer is not None:
            with self._writing_tensorboard():
                self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            if self.tensorboard_failed:  # the error has been raised already (maybe ending the run)
                with contextlib.suppress(OSError):
                    writer.close()
                return
            with self._writing_tensorboard():
                writer.close()
