"""Output folders written whole: built in a hidden staging folder beside the target, then renamed onto it,
so a failed or interrupted run never leaves a half-written folder or loses the one it would replace."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from audiokit import io as audio_io
from audiokit.errors import UsageError


def refuse_existing(out_dir: Path, force: bool) -> None:
    """A one-line error when ``out_dir`` exists and ``force`` is not given."""
    if out_dir.exists() and not force:
        raise UsageError(f"{out_dir}: already exists; remove it or pass --force to replace it")


def check_target(out_dir: Path, inputs: Iterable[Path], marker: str, what: str, force: bool) -> None:
    """Refuse (one UsageError line) an output folder whose replacement would lose files: one that is
    an input or holds one, a file, a non-empty folder without ``marker`` (so not an earlier output of
    this kind, which ``what`` names), or, without ``force``, an earlier output. What it lets through,
    :func:`staged_folder` may replace (``force=True``)."""
    out_dir = Path(out_dir)
    out = out_dir.resolve()
    # the folders the inputs are in (or are), each resolved once: a manifest holds thousands of clips
    paths = map(os.path.abspath, inputs)
    folders = {path if os.path.isdir(path) else os.path.dirname(path) for path in paths}
    for folder in map(Path, folders):
        held = folder.resolve()
        if held == out or out in held.parents:
            raise UsageError(f"{out_dir}: is the input {held} or holds it; write into another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / marker).is_file():
        raise UsageError(f"{out_dir}: a folder that holds no {what} (no {marker}); write into a new folder")
    if not force:
        raise UsageError(f"{out_dir}: already exists (a {what}); pass -f/--force to replace it")


@contextmanager
def staged_folder(out_dir: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; when the block finishes, the folder replaces
    ``out_dir`` (an existing one only with ``force``, checked before anything is written; never the
    current folder or one holding it); when it raises, the staging folder is removed and ``out_dir`` is
    left as it was. Staging folders of ``out_dir`` that a killed run (SIGKILL, power loss) left are removed
    first; each run holds an ``flock`` on its own, so a live run's is kept."""
    given, out_dir = out_dir, Path(os.path.abspath(out_dir))  # "." has no parent to stage beside
    here = Path.cwd().resolve()
    if out_dir.resolve() == here or out_dir.resolve() in here.parents:
        # replaced whole, it would leave this process (and the shell it came from) in a deleted folder
        raise UsageError(f"{given}: is the current folder or holds it; write into a folder below it")
    refuse_existing(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    staging, held = _new_staging(out_dir, given)
    try:
        staging.chmod(0o777 & ~audio_io.UMASK)  # mkdtemp makes 0700 folders; give the usual permissions
        try:
            yield staging
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _naming_the_target(exc, staging, Path(given)) from None
        _publish(staging, out_dir, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(held)


def _new_staging(out_dir: Path, given: Path) -> tuple[Path, int]:
    """A new staging folder of ``out_dir`` and an open descriptor holding its ``flock``. Another run's
    :func:`_remove_stale_staging` may take the folder for a dead run's in the moment between its making
    and its locking (and remove it): then another is made."""
    while True:
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        except OSError as exc:  # it names the folder it could not make, which is no user's
            raise OSError(exc.errno, exc.strerror, str(given)) from None
        try:
            held = os.open(staging, os.O_RDONLY)
        except FileNotFoundError:
            continue  # already removed by another run
        fcntl.flock(held, fcntl.LOCK_EX)  # waits only while another run removes it
        try:
            if os.stat(staging).st_ino == os.fstat(held).st_ino:
                return staging, held
        except FileNotFoundError:
            pass
        os.close(held)


def _naming_the_target(exc: OSError, staging: Path, target: Path) -> OSError:
    """``exc`` (a write in ``staging`` failed) naming the file as it would have been in ``target``
    (the staging folder is removed, its name would mislead), or ``target`` itself when it names no file;
    an error naming a file outside ``staging`` (an input), or with no system error code to say (an
    ``OSError("...")`` of a library: its message is all it has), is returned as it is."""
    if exc.errno is None:
        return exc
    for name in (exc.filename2, exc.filename):  # a copy's error names its source first
        if isinstance(name, str) and (name == str(staging) or name.startswith(f"{staging}{os.sep}")):
            return OSError(exc.errno, exc.strerror, str(target) + name[len(str(staging)) :])
    if exc.filename is None:
        return OSError(exc.errno, exc.strerror, str(target))
    return exc


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove the staging folders of ``out_dir`` (``.NAME.tmp-RANDOM``) that no live run holds."""
    name = re.compile(rf"\.{re.escape(out_dir.name)}\.tmp-[a-z0-9_]{{8}}")
    for entry in out_dir.parent.iterdir():
        if not name.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # removed while held: a run that has just made it waits, then sees it gone
            shutil.rmtree(entry, ignore_errors=True)
        except BlockingIOError:
            pass  # another run is building it now
        finally:
            os.close(fd)


def _publish(staging: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished ``staging`` folder onto ``out_dir`` (replacing an old one only with ``force``)."""
    refuse_existing(out_dir, force)
    _replace_folder(staging, out_dir)


def _replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target`` (on the same file system): an existing ``target`` is renamed
    aside, then removed once ``new`` is in place (and put back if that rename fails)."""
    if not target.exists():
        os.replace(new, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / "previous")
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside / "previous", target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
