"""The README's Python section runs as written: its code block, executed in a folder holding the files
it names (short real speech clips), gives what its comments say."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ROOT, SAMPLES

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make system-tools)")


def _python_section() -> str:
    """The code block of the README's "## Python" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the README's Python section should hold one python block"
    return blocks[0]


def _ffmpeg(source, target) -> None:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-t", "2", str(target)], check=True
    )


def test_readme_python_section_runs(tmp_path, monkeypatch):
    speech = SAMPLES / "speech_fr_16k_a.flac"
    _ffmpeg(SAMPLES / "speech_en_48k.wav", tmp_path / "talk.mp3")
    _ffmpeg(SAMPLES / "speech_en_48k.wav", tmp_path / "talk.webm")
    _ffmpeg(SAMPLES / "speech_ca_44k.flac", tmp_path / "hour.flac")
    _ffmpeg(SAMPLES / "speech_fr_8k_a.wav", tmp_path / "call.wav")
    (tmp_path / "valid").mkdir()
    _ffmpeg(speech, tmp_path / "valid" / "a.flac")
    monkeypatch.chdir(tmp_path)

    names: dict = {}
    exec(compile(_python_section(), str(ROOT / "README.md"), "exec"), names)  # noqa: S102

    wav = names["wav"]
    assert wav.dim() == 2 and wav.shape[0] == 1 and names["rate"] == 16000
    assert names["spec"].shape[:2] == (1, 257) and names["spec"].is_complex()
    assert names["mel"].shape[:2] == (1, 80)
    assert names["audio"].shape == wav.shape  # (C, T) in, (C, T) out, exactly the input length
    assert names["clean"].shape == wav.shape
    assert names["wide"].shape[-1] == 2 * names["narrow"].shape[-1]
    assert (tmp_path / "out.flac").is_file() and (tmp_path / "talk.wav").is_file()
    assert (tmp_path / "talk.akc").read_bytes()[:4] == b"AKC\0"
    rows, report = names["rows"], names["report"]
    assert len(rows) == 1 and report["n"] == 1 and report["codec"] == "speech-16k"
