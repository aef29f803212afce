"""Decode package audio to float arrays: audiokit.io for common formats, ffmpeg for G.722 and GSM."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from audiokit import io as audio_io
from audiokit.errors import AudioFormatError, ToolMissingError

# Raw telephony codecs soundfile cannot read: suffix -> ffmpeg demuxer.
FFMPEG_ONLY = {".g722": "g722", ".gsm": "gsm"}


def ffmpeg_path() -> str:
    """Path of the ffmpeg executable, or ToolMissingError with the install command."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise ToolMissingError("ffmpeg is needed to decode G.722/GSM/MPEG-2.5 audio: apt-get install ffmpeg")
    return found


def _probe(path: Path, demuxer: str | None) -> tuple[int, int]:
    """(sample rate in Hz, channel count) of the first audio stream, as ffmpeg reports it."""
    demux = ["-f", demuxer] if demuxer else []
    command = [ffmpeg_path(), "-hide_banner", "-nostdin", *demux, "-i", str(path)]
    report = subprocess.run(command, capture_output=True, text=True).stderr
    found = re.search(r"Audio: [^\n]*?(\d+) Hz, (mono|stereo|(\d+) channels)", report)
    if found is None:
        raise AudioFormatError(path, "ffmpeg found no audio stream")
    channels = {"mono": 1, "stereo": 2}.get(found.group(2)) or int(found.group(3))
    return int(found.group(1)), channels


def _decode_ffmpeg(path: Path, demuxer: str | None) -> tuple[np.ndarray, int]:
    try:  # the header is often readable where the audio is not (e.g. Ogg without end-of-stream flag)
        header = audio_io.info(path)
        sample_rate, channels = header.sample_rate, header.channels
    except AudioFormatError:
        sample_rate, channels = _probe(path, demuxer)
    command = [
        ffmpeg_path(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *(["-f", demuxer] if demuxer else []),
        "-i",
        str(path),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-ac",
        str(channels),
        "-ar",
        str(sample_rate),
        "-",
    ]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise AudioFormatError(path, f"ffmpeg failed: {message[-1] if message else 'unknown error'}")
    samples = np.frombuffer(result.stdout, dtype="<f4")
    if samples.size < channels:
        raise AudioFormatError(path, "no samples decoded")
    return samples[: samples.size - samples.size % channels].reshape(-1, channels).T.copy(), sample_rate


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file at its native rate (audiokit.io for libsndfile formats, ffmpeg for the rest).

    Returns:
        ``(wav, sample_rate)``: ``wav`` float32 ``(channels, samples)`` in [-1, 1], ``sample_rate`` in Hz.
    Raises:
        AudioFormatError: the file cannot be decoded; ToolMissingError: ffmpeg is needed but missing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FFMPEG_ONLY:
        return _decode_ffmpeg(path, FFMPEG_ONLY[suffix])
    try:
        wav, rate = audio_io.load(path)
    except AudioFormatError:
        if shutil.which("ffmpeg") is None:
            raise
        return _decode_ffmpeg(path, None)
    return wav.numpy(), rate


def resample(wav: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(channels, samples)`` float32 audio from ``sample_rate`` to ``target_rate`` Hz (soxr HQ)."""
    return np.ascontiguousarray(audio_io.resample(wav.T, sample_rate, target_rate).T)
