"""Folders written whole: a failure leaves the old folder and nothing else; success replaces it."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile

import pytest

from audiokit import folders
from audiokit.errors import UsageError
from audiokit.folders import staged_folder


def test_a_failed_build_leaves_the_old_folder_as_it_was(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half way"):
        with staged_folder(out, force=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("half way")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_an_existing_folder_is_replaced_only_with_force(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(UsageError, match="already exists"):
        with staged_folder(out) as staging:
            raise AssertionError("the block must not run")
    with staged_folder(out, force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    with staged_folder(tmp_path / "fresh" / "deeper") as staging:
        (staging / "a.txt").write_text("a")
    assert (tmp_path / "fresh" / "deeper" / "a.txt").read_text() == "a"


def test_staging_folders_of_killed_runs_are_removed_but_not_a_live_ones(tmp_path):
    """A run killed by SIGKILL left its hidden staging folder (a whole noisy set, a pack) for good."""
    stale, live, other = (
        tmp_path / name for name in (".set.tmp-ab12cd_z", ".set.tmp-9876wxyz", ".pack.tmp-ab12cd_z")
    )
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "half.wav").write_bytes(b"RIFF")
    held = os.open(live, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run building the same output now
    try:
        with staged_folder(tmp_path / "set") as staging:
            (staging / "a.txt").write_text("a")
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "set"])


def test_a_failed_write_names_the_file_in_the_target_not_the_staging_folder(tmp_path):
    """A write that fails in the staging folder (``demo``, ``data mix``, ``checkpoint pack`` on a full
    device) names the file as it would have been in the output folder, or that folder when the error
    names no file (was: ``.demo.tmp-XXXXXXXX/clip.wav: No space left on device``, a folder that is gone)."""
    out, source = tmp_path / "out", tmp_path / "input.wav"
    full = errno.ENOSPC, os.strerror(errno.ENOSPC)
    errors = [
        (lambda staging: OSError(*full, str(staging / "sub" / "clip.wav")), out / "sub" / "clip.wav"),
        (lambda staging: OSError(*full), out),
        (lambda staging: OSError(*full, str(source), None, str(staging / "x.txt")), out / "x.txt"),  # a copy
        (lambda staging: OSError(errno.EIO, os.strerror(errno.EIO), str(source)), source),
    ]
    for error, named in errors:
        with pytest.raises(OSError) as info, staged_folder(out) as staging:
            raise error(staging)
        assert (info.value.filename, info.value.strerror) == (str(named), os.strerror(info.value.errno))
    assert list(tmp_path.iterdir()) == []


def test_a_staging_folder_that_cannot_be_made_names_the_output(tmp_path, monkeypatch):
    """The staging folder refused (a read-only mount) names the output folder, not the staging folder
    it could not make (was: ``.out.tmp-XXXXXXXX: Read-only file system``)."""
    mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if ".tmp-" in os.fspath(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(OSError) as info, staged_folder(tmp_path / "out"):
        raise AssertionError("the block must not run")
    assert (info.value.filename, info.value.strerror) == (str(tmp_path / "out"), "Read-only file system")


@pytest.mark.parametrize("moment", ["after_mkdtemp", "before_flock"])
def test_a_run_sweeping_stale_folders_never_removes_one_just_made(tmp_path, monkeypatch, moment):
    """Another run's sweep of stale staging folders in the moment between a run's ``mkdtemp`` and its
    ``flock`` found the new folder unlocked and removed it: the run's writes then failed with
    ``FileNotFoundError`` (or its ``flock`` with ``BlockingIOError``). Now the run makes another."""
    out, swept = tmp_path / "set", []

    def sweep_once() -> None:
        if not swept:
            swept.append([p.name for p in tmp_path.iterdir()])
            folders._remove_stale_staging(out)  # what a second run of the same output does first

    if moment == "after_mkdtemp":
        mkdtemp = tempfile.mkdtemp

        def made_then_swept(*args, **kwargs):
            path = mkdtemp(*args, **kwargs)
            sweep_once()
            return path

        monkeypatch.setattr(folders.tempfile, "mkdtemp", made_then_swept)
    else:
        flock = fcntl.flock

        def swept_then_locked(fd, operation):
            if operation == fcntl.LOCK_EX:  # the new folder's lock (a sweep never waits)
                sweep_once()
            return flock(fd, operation)

        monkeypatch.setattr(folders.fcntl, "flock", swept_then_locked)
    with staged_folder(out) as staging:
        (staging / "a.txt").write_text("a")
    assert swept and swept[0] != []  # the sweep ran while the first staging folder existed
    assert (out / "a.txt").read_text() == "a" and [p.name for p in tmp_path.iterdir()] == ["set"]


def test_an_os_error_without_a_system_error_code_keeps_its_message(tmp_path):
    """An ``OSError`` raised with a message only (``shutil.Error``, a library's ``OSError("...")``)
    became ``[Errno None] None: 'OUT'``: its message, all it had, was lost."""
    for error in (OSError("opusenc went away"), shutil.Error([("a.wav", "b.wav", "disk gone")])):
        with pytest.raises(OSError) as info, staged_folder(tmp_path / "out"):
            raise error
        assert info.value is error and "None" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
