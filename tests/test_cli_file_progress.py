"""A run of one long file shows a bar in seconds of audio on a terminal (DESIGN.md: "progress bar on long
files"); the file-count progress says nothing for one file. Real commands with standard error on a
pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 40


def _on_a_terminal(*args: str) -> str:
    """Run ``audiokit ARGS`` with standard error on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal's width
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "audiokit", *args], stderr=follower, stdout=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    path = folder / "talk.wav"
    sf.write(path, 0.1 * rng.standard_normal((SECONDS * 16000, 1)).astype("float32"), 16000)
    return path


@pytest.mark.parametrize("command", ["encode", "enhance"])
def test_one_long_file_shows_its_seconds(tmp_path, long_file, command):
    out = tmp_path / ("x.akc" if command == "encode" else "x.wav")
    shown = _on_a_terminal(command, str(long_file), str(out))
    assert f"{long_file}:" in shown and f" 0/{SECONDS} [" in shown, shown
    quiet = _on_a_terminal(command, str(long_file), str(out), "-f", "-q")
    assert f"/{SECONDS}" not in quiet


def test_decode_shows_the_seconds_of_its_range(tmp_path, long_file):
    _on_a_terminal("encode", str(long_file), str(tmp_path / "x.akc"), "-q")
    shown = _on_a_terminal("decode", str(tmp_path / "x.akc"), str(tmp_path / "y.wav"), "--start", "10")
    assert "x.akc:" in shown and f" 0/{SECONDS - 10} [" in shown, shown  # the range's seconds


def test_a_folder_run_counts_files_not_seconds(tmp_path, long_file):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        (folder / name).write_bytes(long_file.read_bytes())
    shown = _on_a_terminal("encode", str(folder), str(tmp_path / "out"))
    assert "/2 [" in shown and f"/{SECONDS} [" not in shown, shown
