"""The built-in DDP launcher (``audiokit train --nproc-per-node N``, audiokit/train/launch.py) on real
processes: the exit code it reports and the interpreters it runs on."""

from __future__ import annotations

import signal
import subprocess
import sys

from audiokit.train import launch


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_rank_killed_by_a_signal_during_a_stop_gives_the_shell_code():
    # a stop by SIGTERM during which one rank is killed outright (SIGKILL, the kernel's OOM killer): the
    # exit code is the shell's 128 + 9, never the negative Popen.returncode (sys.exit(-9) exits 247)
    children = [_python("pass"), _python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")]
    assert launch._wait(children, [signal.SIGTERM]) == 128 + signal.SIGKILL


def test_a_stop_whose_ranks_all_end_with_its_code_reports_that_code():
    children = [_python("raise SystemExit(143)"), _python("raise SystemExit(143)")]
    assert launch._wait(children, [signal.SIGTERM]) == 143


def test_starts_its_processes_on_python_3_10(monkeypatch, tmp_path):
    # pyproject says requires-python >= 3.10; Popen(process_group=) only exists from 3.11 (TypeError)
    popen = subprocess.Popen

    def popen_3_10(*args, **kwargs):
        if "process_group" in kwargs:
            raise TypeError("Popen.__init__() got an unexpected keyword argument 'process_group'")
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen_3_10)
    assert launch.launch([str(tmp_path / "missing.yaml"), "-q"], 2) == 1


def test_a_rank_that_hangs_after_another_failed_is_given_up_on_during_a_stop_too(monkeypatch):
    # after Ctrl-C one rank failed (exit 1) and another hung: the grace for the others ran out only when no
    # signal had come, so the launcher waited for the hung rank for good
    monkeypatch.setattr(launch, "GRACE_SECONDS", 0.5)
    hung = _python("import time; time.sleep(60)")
    children = [_python("raise SystemExit(1)"), _python("raise SystemExit(130)"), hung]
    try:
        assert launch._wait(children, [signal.SIGINT]) == 1
        assert hung.poll() is None  # left for the caller to kill
    finally:
        hung.kill()
        hung.wait()
