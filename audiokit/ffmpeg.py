"""Reading audio through ffmpeg: m4a/aac/mp4, webm (what browsers record) and anything else it decodes.

:mod:`audiokit.io` reads through soundfile first and comes here for what libsndfile cannot open.
``ffprobe`` reads the header; ``ffmpeg`` decodes to float32 PCM on a pipe, read block by block (constant
memory). Problems raise :class:`AudioFormatError` naming the file; a missing ffmpeg raises
:class:`ToolMissingError` with the command that installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from audiokit.errors import AudioFormatError, ToolMissingError
from audiokit.tools import require_tool

FFMPEG_EXTENSIONS = (
    ".m4a",
    ".m4b",
    ".aac",
    ".mp4",
    ".mov",
    ".webm",
    ".mka",
    ".mkv",
    ".wma",
    ".amr",
    ".3gp",
    ".ac3",
)
"""Extensions read through ffmpeg (libsndfile cannot); other files come here when libsndfile fails."""


TRUNCATION_SECONDS = 0.1
"""Decoding this much less than the container's stated duration means the file was cut short."""


def _last_line(text: str, path: Path) -> str:
    """ffmpeg's last message line, without the file name it starts with."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "no reason given"
    return line.removeprefix(f"{path}: ")


_LAST_PROBE: dict[tuple, dict] = {}
"""The latest probe, by the file's identity: reading a file opens it twice or more (its header, then its
samples; ``bwe`` measures the whole file first), and each ffprobe costs some 60 ms of CPU, over a
quarter of what a short m4a clip took in a folder run."""


def _probe(path: Path, ffprobe: str) -> dict:
    """The first audio stream's facts and the container's names, as ffprobe reports them; those of the
    latest probe when it was of this very file, unchanged since (device, inode, size, times)."""
    try:
        stat = os.stat(path)
    except OSError:  # ffprobe says why
        return _run_probe(path, ffprobe)
    key = (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _LAST_PROBE:
        facts = _run_probe(path, ffprobe)
        _LAST_PROBE.clear()
        _LAST_PROBE[key] = facts
    return _LAST_PROBE[key]


def _run_probe(path: Path, ffprobe: str) -> dict:
    """:func:`_probe` by running ffprobe."""
    done = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-of",
            "json",
            "-show_entries",
            "stream=codec_name,sample_rate,channels,duration:format=format_name,duration",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise AudioFormatError(path, f"not a readable audio file: {_last_line(done.stderr, path)}")
    found = json.loads(done.stdout or "{}")
    streams = found.get("streams") or []
    if not streams or not int(streams[0].get("sample_rate") or 0) or not int(streams[0].get("channels") or 0):
        raise AudioFormatError(path, "not a readable audio file: it holds no audio stream")
    return {"stream": streams[0], "format": found.get("format", {})}


class FfmpegReader:
    """A decoded file with soundfile's reading interface (``samplerate``, ``channels``, ``frames``,
    ``format``, ``subtype``, ``read``), used as a context manager.

    ``frames`` is the container's duration times the rate: an estimate (encoder delay and padding are
    not counted the same way by every container); reading gives the exact samples.
    """

    def __init__(self, path: Path, ffmpeg: str, ffprobe: str) -> None:
        facts = _probe(path, ffprobe)
        stream, container = facts["stream"], facts["format"]
        self.path = path
        self.samplerate = int(stream["sample_rate"])
        self.channels = int(stream["channels"])
        duration = float(stream.get("duration") or container.get("duration") or 0.0)
        self.frames = round(duration * self.samplerate)
        names = container.get("format_name", "").split(",")
        suffix = path.suffix.lower().lstrip(".")
        self.format = (suffix if suffix in names else names[0] or "ffmpeg").upper()
        self.subtype = str(stream.get("codec_name", "unknown")).upper()
        self._ffmpeg = ffmpeg
        self._process: subprocess.Popen | None = None
        self._errors = tempfile.TemporaryFile()
        self._done = False
        self._read = 0

    def _start(self) -> subprocess.Popen:
        if self._process is None:
            command = [self._ffmpeg, "-nostdin", "-v", "error", "-i", str(self.path), "-map", "0:a:0",
                       "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(self.channels),
                       "-ar", str(self.samplerate), "pipe:1"]  # fmt: skip
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._errors)
        return self._process

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """Up to ``frames`` (all when negative) further samples as ``(frames, channels)`` float32."""
        if self._done:
            return np.zeros((0, self.channels), np.float32)
        process = self._start()
        frame_bytes = 4 * self.channels
        data = process.stdout.read() if frames < 0 else process.stdout.read(frames * frame_bytes)
        if frames < 0 or len(data) < frames * frame_bytes:
            self._finish(process)
        usable = len(data) - len(data) % frame_bytes
        self._read += usable // frame_bytes
        if self._done:
            self._check_length()
        return np.frombuffer(data[:usable], dtype="<f4").reshape(-1, self.channels).astype(dtype)

    def _finish(self, process: subprocess.Popen) -> None:
        self._done = True
        if process.wait() != 0:
            self._errors.seek(0)
            reason = _last_line(self._errors.read().decode(errors="replace"), self.path)
            raise AudioFormatError(self.path, f"ffmpeg could not decode it: {reason}")

    def _check_length(self) -> None:
        missing = (self.frames - self._read) / self.samplerate
        if self.frames and missing > TRUNCATION_SECONDS:
            raise AudioFormatError(
                self.path,
                f"truncated: the audio ends at {self._read / self.samplerate:.3f} s, its header says "
                f"{self.frames / self.samplerate:.3f} s",
            )

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._process is not None:
            self._process.stdout.close()
        self._errors.close()

    def __enter__(self) -> FfmpegReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(path: Path, soundfile_reason: str) -> FfmpegReader:
    """An :class:`FfmpegReader` of ``path``, which soundfile could not open (``soundfile_reason``)."""
    try:
        ffmpeg = require_tool("ffmpeg", "ffmpeg", f"{path}: reading {path.suffix or 'this file'}")
        ffprobe = require_tool("ffprobe", "ffmpeg", f"{path}: reading {path.suffix or 'this file'}")
    except ToolMissingError:
        if path.suffix.lower() in FFMPEG_EXTENSIONS:
            raise
        raise AudioFormatError(
            path, f"not a readable audio file ({soundfile_reason}; install ffmpeg to read more formats)"
        ) from None
    return FfmpegReader(path, ffmpeg, ffprobe)
