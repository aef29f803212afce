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


@pytest.mark.parametrize(
    "script",
    ["benchmarks/server_load.py", "benchmarks/bench_codec.py", "benchmarks/enhancer_vs_rnnoise.py"],
)
def test_help_describes_the_script_in_whole_sentences(script):
    """The description is the docstring's first paragraph: its first line alone ended mid-sentence
    ("... clients on loopback, saved to")."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    description = done.stdout.split("\n\n")[1]  # usage, description, options
    assert description.rstrip().endswith((".", ")")), description
