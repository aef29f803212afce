"""`git_commit`: the commit a run or benchmark records, read without touching the checkout."""

from __future__ import annotations

import os
import subprocess

from audiokit.provenance import git_commit


def _git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
        capture_output=True, text=True,
    ).stdout.strip()


def test_reading_the_commit_leaves_the_index_alone(tmp_path):
    """`git status` refreshed the index (taking .git/index.lock) for every run that started: a training
    started beside the user's own `git commit` made it fail on the lock, and one started under a file size
    limit left a cut index.lock behind. The commit and the dirty flag are read without writing."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-qm", "a")
    head = _git(tmp_path, "rev-parse", "HEAD")
    index = tmp_path / ".git" / "index"
    os.utime(tmp_path / "a.txt", ns=(10**18, 10**18))  # stat data changed, content not: a refresh rewrites
    before = index.stat().st_mtime_ns, index.read_bytes()
    assert git_commit(tmp_path) == head
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before
    (tmp_path / "a.txt").write_text("b\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before
