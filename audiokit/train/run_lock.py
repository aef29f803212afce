"""One training process per run directory.

Two sessions writing one run directory would overwrite each other's checkpoints and records, and the
second one's start-up clean-up removes the temporary files of the first one's saves in flight. The
training process that owns a run (rank 0 under DDP) holds an advisory ``flock`` on ``RUN/.lock`` and
removes the file when it lets the run go. The kernel releases the lock when the process ends, however
it ends (SIGKILL and the out-of-memory killer too): a lock that is free means that no process trains
the run, and a session recorded in ``run.json`` without an end was killed.
"""

from __future__ import annotations

import fcntl
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from audiokit.errors import UsageError

LOCK_NAME = ".lock"


class RunLock:
    """The lock of a run directory, held until :meth:`close` or the end of the process."""

    def __init__(self, run_dir: Path) -> None:
        # the folders this lock makes: removed again if still empty when it lets go (a start that failed)
        self.made = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_NAME
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not said which"
                handle.close()
                raise UsageError(_refusal(run_dir, holder)) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()  # the file a holder removed as it let go: lock the one there now
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}, since {started}\n")
        handle.flush()
        self.handle = handle

    @property
    def closed(self) -> bool:
        return self.handle.closed

    def close(self) -> None:
        """Remove the lock file (and the folders it made, if empty) and let the run go (a second call does
        nothing)."""
        if self.closed:
            return
        self.path.unlink(missing_ok=True)
        self.handle.close()
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # holds the run's files
                break


def _refusal(run_dir: Path, holder: str) -> str:
    if holder.startswith(f"pid {os.getpid()} on {platform.node()},"):
        return f"{run_dir}: a Trainer of this process still holds this run directory; close() it first"
    return (
        f"{run_dir}: another training process is using this run directory ({holder}); stop it before "
        "you resume, or choose another --run-dir"
    )
