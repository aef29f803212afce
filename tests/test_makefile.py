"""The Makefile's setup: `make demo` needs only the tools the package runs, the tests also the browsers;
torch comes from PyTorch's CPU index where it can be reached."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MISSING = "nosuch-audiokit-tool:nosuch-audiokit-package"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(*arguments: str) -> str:
    """What ``make -n ARGUMENTS`` would run (nothing runs)."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *arguments], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _as_user(*arguments: str) -> subprocess.CompletedProcess:
    """``make ARGUMENTS`` as a user who may not install packages (``nobody`` where this runs as root)."""
    command = ["make", "-s", "-C", str(ROOT), *arguments]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.parametrize("target", ["demo", "bench", "lint"])
def test_demo_bench_and_lint_do_not_need_the_test_browsers(target):
    assert "chromium" not in _dry_run(target)
    assert "nosuch-audiokit" not in _dry_run(target, f"TEST_TOOLS={MISSING}")
    assert "nosuch-audiokit" in _dry_run(target, f"SYSTEM_TOOLS={MISSING}")


@pytest.mark.parametrize("target", ["test", "test-all"])
def test_the_tests_need_the_browsers_too(target):
    assert "nosuch-audiokit" in _dry_run(target, f"TEST_TOOLS={MISSING}")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_missing_tool_prints_the_install_line():
    done = _as_user("system-tools", f"SYSTEM_TOOLS={MISSING} opusenc:opus-tools")
    assert done.returncode != 0
    assert "install them with: sudo apt-get install nosuch-audiokit-package\n" in done.stdout


def test_torch_comes_from_the_cpu_index_unless_told_otherwise():
    stamp = "STAMP=.nosuch-stamp"  # a target that is never up to date, so that its recipe is shown
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in _dry_run(stamp, ".nosuch-stamp")
    assert "--extra-index-url" not in _dry_run(stamp, ".nosuch-stamp", "TORCH_INDEX=")
