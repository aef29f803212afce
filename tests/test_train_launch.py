"""The built-in DDP launcher (``audiokit train --nproc-per-node N``, audiokit/train/launch.py) on real
processes: the exit code it reports."""

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

