"""recipes/gpu/bench_kernels.sh's checks before it spends device time (the device image has torch, pytest
and ninja but not every package audiokit imports)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """bench_kernels.sh, by default with DEVICE=cuda (without a GPU it stops at the device check)."""
    env = dict(os.environ, PYTHON=sys.executable, DEVICE="cuda", OUT=str(tmp_path / "out")) | env
    return subprocess.run(
        ["bash", str(ROOT / "recipes/gpu/bench_kernels.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bench_script_stops_at_once_without_the_packages_audiokit_imports(tmp_path):
    """Without soxr (absent from the device image) neither the benchmark nor most gpu test modules
    import: the script says so and stops with exit 3 before building or testing anything."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "soxr.py").write_text("raise ImportError('soxr is not installed')\n")
    (tmp_path / "wheels").mkdir()
    pythonpath = os.pathsep.join([str(blocked), str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = _bench_script(tmp_path, PYTHONPATH=pythonpath, WHEELS=str(tmp_path / "wheels"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "python packages missing: soxr" in done.stderr
    assert "build:" not in done.stdout


@pytest.mark.slow
def test_bench_script_collects_only_the_modules_of_gpu_tests(tmp_path):
    """A test module the device cannot import (fastapi, librosa... are not in its image) and that holds
    no gpu test neither runs nor fails the call's exit status (6: a test failed)."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "fastapi.py").write_text("raise ImportError('fastapi is not installed')\n")
    pythonpath = os.pathsep.join([str(blocked), str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = _bench_script(tmp_path, PYTHONPATH=pythonpath, DEVICE="cpu", COUNTS="1", FRAMES="1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tests exited with 0" in done.stdout and "test_serve" not in done.stdout


def test_a_copy_without_git_records_the_commit_it_is_given(tmp_path, monkeypatch):
    """A lent GPU machine gets the working tree without .git: results and run records name the commit
    that the call passes in AUDIOKIT_COMMIT, not "unknown"."""
    from audiokit.provenance import git_commit

    monkeypatch.delenv("AUDIOKIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("AUDIOKIT_COMMIT", "af5b1aacf642")
    assert git_commit(tmp_path) == "af5b1aacf642"
    if (ROOT / ".git").exists():  # a checkout names its own commit (a copy without .git takes the variable)
        assert git_commit() not in ("unknown", "af5b1aacf642")


def test_weights_over_the_file_limit_come_back_in_parts(tmp_path):
    """The device returns no file over 16 MiB: EMA weights larger than that (a run of the codec recipe,
    with its decoders per rate, saves 40 MiB) come back as parts that concatenate to the file."""
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    weights = os.urandom(17 * (1 << 20) + 5)
    (run / "model.safetensors").write_bytes(weights)
    (run / "model.json").write_text('{"step": 3}\n')
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    done = subprocess.run(
        [sys.executable, str(ROOT / "recipes/gpu/gpu_helper.py"), "collect", str(run), str(out), "", "none",
         str(tmp_path / "pack"), "", "weights"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OVER 16 MiB" not in done.stdout
    assert all(path.stat().st_size <= 16 * (1 << 20) for path in out.iterdir())
    parts = sorted(out.glob("model.safetensors.part*"))
    assert len(parts) == 2 and not (out / "model.safetensors").exists()
    assert b"".join(part.read_bytes() for part in parts) == weights
    assert (out / "model.json").is_file()
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["weights"] == {
        "parts": 2,
        "bytes": len(weights),
        "sha256": hashlib.sha256(weights).hexdigest(),
    }
