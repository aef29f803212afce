"""Scripts the docs tell users to run answer --help with their usage and do nothing else (two of them
ran their whole job: bwe_speech_manifest.py wrote into the data folder, make_samples.py rebuilt samples/)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("script", ["benchmarks/bwe_speech_manifest.py", "recipes/data/make_samples.py"])
def test_help_prints_the_usage_and_runs_nothing(tmp_path, script):
    env = dict(os.environ, AUDIOKIT_DATA=str(tmp_path / "data"), PATH=str(tmp_path))  # no apt-get, no data
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") and "Usage:" in done.stdout
    assert not (tmp_path / "data").exists()
