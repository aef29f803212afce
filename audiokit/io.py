"""Audio file I/O: load any supported format, resample, remix channels, find audio files, save atomically
and check outputs before writing (no overwrite without ``force``, never an input, never a rename onto a
device or FIFO).

Formats are read through soundfile (libsndfile): WAV/FLAC/OGG (Vorbis, Opus)/MP3 and the other
formats libsndfile knows; what it cannot open (m4a/aac/mp4, webm, ...) through ffmpeg
(:mod:`audiokit.ffmpeg`); headerless PCM with a :class:`RawFormat`. Resampling uses soxr at high
quality. Every problem with an input file raises :class:`AudioFormatError` whose one-line message
names the file and the problem.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import math
import numbers
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

from audiokit import ffmpeg
from audiokit.errors import AudioFormatError, AudiokitError, UsageError

SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")
RAW_EXTENSIONS = (".raw", ".pcm")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + ffmpeg.FFMPEG_EXTENSIONS + RAW_EXTENSIONS
"""What a directory scan (:func:`find_audio`) takes for audio."""

# ffmpeg's names of headerless sample formats -> (soundfile subtype, endianness, bytes per sample)
RAW_SAMPLE_FORMATS = {
    "u8": ("PCM_U8", "FILE", 1),
    "s8": ("PCM_S8", "FILE", 1),
    "s16le": ("PCM_16", "LITTLE", 2),
    "s16be": ("PCM_16", "BIG", 2),
    "s24le": ("PCM_24", "LITTLE", 3),
    "s24be": ("PCM_24", "BIG", 3),
    "s32le": ("PCM_32", "LITTLE", 4),
    "s32be": ("PCM_32", "BIG", 4),
    "f32le": ("FLOAT", "LITTLE", 4),
    "f32be": ("FLOAT", "BIG", 4),
    "f64le": ("DOUBLE", "LITTLE", 8),
    "f64be": ("DOUBLE", "BIG", 8),
}

PathLike = str | os.PathLike

STDIO = "-"
"""The path that means standard input (as an input) or standard output (as an output)."""

WRITABLE_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")
"""Extensions :func:`save` / :func:`open_writer` write; a target without one (stdout, a device) is WAV."""

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 1024
"""The most channels audio written (libsndfile's limit) or resampled here may have: more are audio laid
out ``(samples, channels)`` where ``(channels, samples)`` was meant, or the other way round."""
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
"""The rates (Hz) Opus codes (libsndfile writes no other; it decodes any Opus file at one of them)."""
# output formats that take only some rates (Hz) or channel counts
_FORMAT_RATES = {
    ".opus": OPUS_RATES,
    ".mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
}
_FORMAT_MAX_RATE = {".ogg": 192_000}  # libvorbis crashes above
_FORMAT_MAX_CHANNELS = {".mp3": 2, ".flac": 8}


def is_stdio(path: PathLike) -> bool:
    """True for ``-`` (standard input or output)."""
    return str(path) == STDIO


def carries_stdout(path: PathLike) -> bool:
    """True where text printed to standard output would land in ``path``: ``-``, or the file standard
    output is (``/dev/stdout``, ``/proc/self/fd/1``, or the file a shell redirect sends it to), so a
    summary must go to standard error instead."""
    if is_stdio(path):
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file yet, or stdout is no file (captured)
        return False


def shown_name(path: PathLike) -> str:
    """``path`` as messages and summaries name an input: ``<stdin>`` for ``-``."""
    return "<stdin>" if is_stdio(path) else str(path)


def shown_output(path: PathLike) -> str:
    """``path`` as messages and summaries name an output: ``<stdout>`` for ``-``."""
    return "<stdout>" if is_stdio(path) else str(path)


def check_sample_rate(rate: int, option: str = "--sample-rate") -> None:
    """UsageError unless ``rate`` (Hz) is within :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE`."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UsageError(f"{option} {rate}: must be a rate in Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}")


def check_input_rate(path: PathLike, rate: int) -> None:
    """:class:`AudioFormatError` naming ``path`` unless its ``rate`` (Hz) lies within
    :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE`, the rates the processing commands resample."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            path,
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, "
            "the rates audiokit processes",
        )


def suffix_option(value: str) -> str:
    """``--suffix``: an audio extension this package writes, with or without its dot, in lower case;
    UsageError otherwise."""
    suffix = value.lower() if value.startswith(".") else f".{value.lower()}"
    if suffix not in WRITABLE_EXTENSIONS:
        raise UsageError(f"--suffix {value!r}: write one of {', '.join(WRITABLE_EXTENSIONS)}")
    return suffix


def output_extension(path: PathLike) -> str:
    """The audio extension ``path`` is written as: its own (lower case), or ``.wav`` for standard output
    and for targets written in place (a device, a FIFO). UsageError for any other extension."""
    if is_stdio(path) or writes_in_place(path):
        return ".wav"
    suffix = Path(path).suffix.lower()
    if suffix not in WRITABLE_EXTENSIONS:
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise UsageError(f"{path}: {what}; write one of {', '.join(WRITABLE_EXTENSIONS)}")
    return suffix


def supported_rate(path: PathLike, rate: int) -> int:
    """``rate``, or the lowest rate above it (else the highest) that ``path``'s format can hold (Opus and
    MP3 take only some rates)."""
    rates = _FORMAT_RATES.get(output_extension(path))
    if rates is None or rate in rates:
        return min(rate, _FORMAT_MAX_RATE.get(output_extension(path), rate))
    return next((r for r in rates if r >= rate), rates[-1])


def check_output_format(
    path: PathLike, sample_rate: int | None = None, channels: int | None = None, rate_option: bool = False
) -> None:
    """UsageError, before anything is written, when ``path`` cannot be written as audio: an unknown
    extension, a rate (Hz) its format cannot hold (Opus: 8/12/16/24/48 kHz, MP3: 8..48 kHz), too many
    channels. ``rate_option``: ``sample_rate`` is the user's ``--sample-rate`` (the advice differs)."""
    suffix = output_extension(path)
    if sample_rate is not None:
        check_sample_rate(sample_rate)
        if supported_rate(path, sample_rate) != sample_rate:
            rates = _FORMAT_RATES.get(suffix)
            allowed = (
                f"{', '.join(str(r) for r in rates)} Hz" if rates else f"up to {_FORMAT_MAX_RATE[suffix]} Hz"
            )
            advice = "choose another --sample-rate" if rate_option else "pass --sample-rate"
            raise UsageError(f"{path}: {suffix[1:]} cannot hold {sample_rate} Hz audio ({allowed}); {advice}")
    limit = _FORMAT_MAX_CHANNELS.get(suffix)
    if channels is not None and limit is not None and channels > limit:
        raise UsageError(f"{path}: {suffix[1:]} holds at most {limit} channels, the audio has {channels}")


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says: rate in Hz, channels, length in samples, container and codec."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class RawFormat:
    """How to read headerless PCM: rate in Hz, sample format (ffmpeg's names, see
    :data:`RAW_SAMPLE_FORMATS`: ``s16le``, ``f32le``, ...) and interleaved channel count."""

    sample_rate: int
    sample_format: str = "s16le"
    channels: int = 1

    def __post_init__(self) -> None:
        if self.sample_format not in RAW_SAMPLE_FORMATS:
            raise UsageError(
                f"--raw-format {self.sample_format!r}: choose from {', '.join(RAW_SAMPLE_FORMATS)}"
            )
        if self.sample_rate <= 0:
            raise UsageError(f"--raw-rate {self.sample_rate}: must be a rate in Hz > 0")
        if self.channels <= 0:
            raise UsageError(f"--raw-channels {self.channels}: must be >= 1")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioFormatError(path, "no such file or directory")
    if path.is_dir():
        raise AudioFormatError(path, "is a directory, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioFormatError(path, "file is empty (0 bytes)")
    start = _first_bytes(path, 4)
    if path.suffix.lower() == ".akc" or _is_akc_magic(start):
        raise AudioFormatError(path, "an audiokit codec stream, not audio: decode it first (audiokit decode)")
    if start in (b"RIFF", b"RIFX", b"RF64") and size < WAV_HEADER_BYTES:
        raise AudioFormatError(path, f"a truncated WAV file: {size} bytes, less than a WAV header")


WAV_HEADER_BYTES = 44
"""RIFF, fmt and data chunk headers: a WAV file shorter than this is cut inside its header."""


def is_akc(path: Path) -> bool:
    """Whether the regular file ``path`` begins with the ``.akc`` magic, whatever its name says."""
    return _is_akc_magic(_first_bytes(path, 4))


def _first_bytes(path: Path, count: int) -> bytes:
    """The first ``count`` bytes of the regular file ``path`` (none of a FIFO's: they would be lost to
    the reader; none of a file that cannot be opened: its reader says why)."""
    if not path.is_file():
        return b""
    try:
        with open(path, "rb") as handle:
            return handle.read(count)
    except OSError:
        return b""


def _is_akc_magic(start: bytes) -> bool:
    from audiokit.bitstream import MAGIC  # the container imports this module

    return start[: len(MAGIC)] == MAGIC


CONTAINER_MAGIC = {
    b"RIFF": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg", b"FORM": "AIFF", b"ID3": "MP3"
}
"""The first bytes of the audio files whose header --raw-rate would read as samples."""


def _open_raw(path: Path, raw: RawFormat) -> sf.SoundFile:
    with open(path, "rb") as handle:
        start = handle.read(4)
    container = next((name for magic, name in CONTAINER_MAGIC.items() if start.startswith(magic)), None)
    if container is not None:  # its header would be read as samples (a click, then shifted audio)
        raise AudioFormatError(
            path, f"a {container} file, not headerless PCM: drop --raw-rate (its header gives the rate)"
        )
    subtype, endian, width = RAW_SAMPLE_FORMATS[raw.sample_format]
    frame_bytes = width * raw.channels
    if path.stat().st_size % frame_bytes:
        raise AudioFormatError(
            path,
            f"raw {raw.sample_format} x {raw.channels} channel(s): {path.stat().st_size} bytes is not a "
            f"whole number of {frame_bytes}-byte frames (check --raw-format and --raw-channels)",
        )
    return sf.SoundFile(
        os.fsencode(path), samplerate=raw.sample_rate, channels=raw.channels, subtype=subtype, endian=endian,
        format="RAW",
    )  # fmt: skip


def _open(path: Path, raw: RawFormat | None = None) -> sf.SoundFile | ffmpeg.FfmpegReader:
    """A reader of ``path``: soundfile, else ffmpeg; headerless PCM as ``raw`` says."""
    _check_readable(path)
    if raw is not None:
        return _open_raw(path, raw)
    if path.suffix.lower() in RAW_EXTENSIONS:
        raise AudioFormatError(
            path,
            "headerless PCM: give --raw-rate (and --raw-format unless s16le, --raw-channels unless mono)",
        )
    if path.suffix.lower() not in ffmpeg.FFMPEG_EXTENSIONS:
        try:
            with _quiet_native_stderr(path.suffix.lower() == ".mp3"):
                return sf.SoundFile(os.fsencode(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).split(":")[-1].strip().rstrip(".") or "unreadable"
    else:
        reason = "not a libsndfile format"
    return ffmpeg.open_reader(path, reason)


def info(path: PathLike, raw: RawFormat | None = None) -> AudioInfo:
    """Read the header of ``path`` without decoding the audio (``raw``: how to read headerless PCM).

    For files read through ffmpeg, ``frames`` is the container's duration times the rate (an estimate).
    """
    path = Path(path)
    with _open(path, raw) as f:
        return AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)


def _check_samples_by_channels(wav: np.ndarray, where: str, ndims: tuple[int, ...]) -> None:
    """:class:`UsageError` unless ``wav`` is ``(samples, channels)`` audio (of a rank in ``ndims``) with at
    most :data:`MAX_CHANNELS` channels: more are audio laid out ``(channels, samples)``."""
    if wav.ndim not in ndims or (wav.ndim == 2 and wav.shape[1] > MAX_CHANNELS):
        raise UsageError(
            f"{where} takes (samples, channels) audio of at most {MAX_CHANNELS} channels, got shape "
            f"{tuple(wav.shape)}; audio laid out (channels, samples) needs .T"
        )


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(T, C)`` (or ``(T,)``) float32 audio from ``orig_rate`` to ``target_rate`` Hz with soxr
    (HQ). :class:`UsageError` for other ranks and for more than :data:`MAX_CHANNELS` channels: audio laid
    out ``(channels, samples)``, as :func:`load` gives it, which soxr resampled along the wrong axis (a
    few frames of thousands of channels) or, from ~40,000 samples, crashed the process on."""
    _check_samples_by_channels(wav, "resample", (1, 2))
    if orig_rate == target_rate or wav.shape[0] == 0:
        return wav
    return soxr.resample(wav, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def remix(wav: np.ndarray, channels: int) -> np.ndarray:
    """Map ``(T, C)`` audio to ``channels``: average to mono, repeat mono, or keep the first channels.

    Raises ``ValueError`` when asked to go from several channels to more channels, :class:`UsageError`
    for audio laid out ``(channels, samples)`` (more than :data:`MAX_CHANNELS` channels: it was averaged
    over its samples).
    """
    _check_samples_by_channels(wav, "remix", (2,))
    current = wav.shape[1]
    if channels == current:
        return wav
    if channels == 1:
        return wav.mean(axis=1, keepdims=True, dtype=np.float32)
    if current == 1:
        return np.repeat(wav, channels, axis=1)
    if channels < current:
        return np.ascontiguousarray(wav[:, :channels])
    raise ValueError(f"cannot map {current} channels to {channels}; give a mono file or ask for <= {current}")


UNKNOWN_WAV_LENGTH = 0x7FFF0000
"""``data`` sizes from here up are placeholders of writers that did not know the length (a pipe):
``arecord`` writes 0x7fffff00, ffmpeg and sox 0xffffffff (0, another, reads as no samples)."""


def _wav_is_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds (a size that is a
    placeholder for an unknown length, :data:`UNKNOWN_WAV_LENGTH`, claims nothing)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = fh.read(4), int.from_bytes(fh.read(4), "little")
            if chunk_id == b"data":
                unknown = chunk_size == 0 or chunk_size >= UNKNOWN_WAV_LENGTH
                return not unknown and offset + 8 + chunk_size > size
            offset += 8 + chunk_size + (chunk_size & 1)
    return False


def _ogg_is_truncated(path: Path) -> bool:
    """True when the last Ogg page lacks the end-of-stream flag (the file was cut short)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    last = tail.rfind(b"OggS")
    return last >= 0 and last + 5 < len(tail) and not tail[last + 5] & 0x04


def _id3v2_size(path: Path) -> int:
    """Bytes of the ID3v2 tag an MP3 starts with (cover art and all), 0 without one."""
    with open(path, "rb") as fh:
        head = fh.read(10)
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _mp3_states_its_length(path: Path) -> bool:
    """True when an MP3's first frame (after any ID3v2 tag) holds a Xing/Info tag: its frame count gives
    the exact length libsndfile reports, so decoding fewer samples means damaged or cut audio data.
    (Without the tag the length is estimated from the first frame's bitrate and can be far off.)"""
    with open(path, "rb") as fh:
        fh.seek(_id3v2_size(path))
        frame = fh.read(200)  # the tag sits 13-36 bytes past the frame header
    return (
        len(frame) > 4
        and frame[0] == 0xFF
        and frame[1] & 0xE0 == 0xE0
        and (b"Xing" in frame or b"Info" in frame)
    )


def _check_decoded_length(path: Path, f: sf.SoundFile | ffmpeg.FfmpegReader, decoded: int) -> None:
    """Raise when an MP3 whose header states its length decoded to fewer samples (libmpg123 stops
    quietly at damaged frames: a 3 s file would otherwise come back as 0.7 s), or when its bytes are far
    more than its decoded audio can fill (libmpg123 finds a few frame headers by chance in other files,
    e.g. a program renamed .mp3, and decoded them to a few milliseconds of silence). A file whose
    length is exact (WAV, FLAC, AIFF, headerless PCM) that decoded to fewer samples was cut short, on
    disk or while it was read; its audio must not pass for the whole file."""
    if isinstance(f, sf.SoundFile) and f.format in EXACT_LENGTH_FORMATS and decoded < f.frames:
        raise AudioFormatError(
            path, f"cut short (on disk or while being read): it ended at sample {decoded} of {f.frames}"
        )
    if not _is_mp3(f):
        return
    if decoded < f.frames and _mp3_states_its_length(path):
        raise AudioFormatError(
            path, f"truncated or corrupt MP3 data: decoding stopped at sample {decoded} of {f.frames}"
        )
    payload = path.stat().st_size - _id3v2_size(path)
    most = decoded / f.samplerate * MPEG_MAX_BYTES_PER_SECOND + MP3_SLACK_BYTES
    if payload > most:
        raise AudioFormatError(
            path,
            f"not an MP3 file: {payload} bytes hold only {decoded / f.samplerate:.3f} s of MPEG audio "
            "(the rest is other data)",
        )


EXACT_LENGTH_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF", "RAW")
"""libsndfile formats whose stated number of samples is exact (a header's, or a raw file's size)."""
MPEG_MAX_BYTES_PER_SECOND = 448_000 // 8
"""The most bytes a second of MPEG audio takes (layer I at 448 kbps, the highest bitrate of any layer)."""
MP3_SLACK_BYTES = 32 * 1024
"""Bytes an MP3 may hold besides its frames and ID3v2 tag (an ID3v1 or APE tag, padding)."""


def _is_mp3(f: sf.SoundFile | ffmpeg.FfmpegReader) -> bool:
    return isinstance(f, sf.SoundFile) and f.format == "MP3"


@contextmanager
def _quiet_native_stderr(active: bool) -> Iterator[None]:
    """libmpg123 writes warnings ("Xing stream size off by more than 1%") straight to the process's
    stderr; while an MP3 is opened or read (``active``) they go to /dev/null (what is wrong is reported
    as one line by the checks above)."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_complete(path: Path, f: sf.SoundFile | ffmpeg.FfmpegReader) -> None:
    truncated = (f.format in ("WAV", "WAVEX") and _wav_is_truncated(path)) or (
        f.format == "OGG" and _ogg_is_truncated(path)
    )
    if truncated:
        raise AudioFormatError(path, "truncated: the file ends before its audio data does")


def _read_all(path: Path, f: sf.SoundFile | ffmpeg.FfmpegReader) -> np.ndarray:
    try:
        with _quiet_native_stderr(_is_mp3(f)):
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        problem = f"truncated or corrupt audio data at sample {_first_bad_sample(f, 0)} ({exc})"
        raise AudioFormatError(path, problem) from None
    if data.shape[0] == 0:
        raise AudioFormatError(path, "contains no audio samples")
    _check_decoded_length(path, f, data.shape[0])
    return data


FLOAT_PEAK_LIMIT = 64.0
"""The largest sample magnitude read as audio, from files and by the server (+36 dBFS): beyond it the
numbers are not audio scaled to about [-1, 1] (integer values stored as floats, say), and the models'
squares overflow (a +500 dBFS file was coded to silence)."""


def _finish(
    path: Path,
    data: np.ndarray,
    rate: int,
    sample_rate: int | None,
    channels: int | None,
    allow_nonfinite: bool = False,
    allow_loud: bool = False,
):
    if not allow_nonfinite and not np.isfinite(data).all():
        raise AudioFormatError(path, "contains NaN or infinite samples")
    if not allow_loud and (peak := float(np.abs(data).max(initial=0.0))) > FLOAT_PEAK_LIMIT:
        raise AudioFormatError(
            path,
            f"samples up to {peak:.4g} ({20 * math.log10(peak):+.0f} dBFS): not audio scaled to about "
            "[-1, 1] (integer values stored as floats?)",
        )
    if channels is not None:
        try:
            data = remix(data, channels)
        except ValueError as exc:
            raise AudioFormatError(path, str(exc)) from None
    if sample_rate is not None:
        data = resample(data, rate, sample_rate)
        rate = sample_rate
    return data, rate


def _load_options(path: Path, sample_rate: int | None, channels: int | None) -> tuple[int | None, int | None]:
    """:func:`load`'s ``sample_rate`` (Hz, up to :data:`MAX_SAMPLE_RATE`) and ``channels`` (1 to
    :data:`MAX_CHANNELS`) as ints, or :class:`UsageError` naming ``path`` (``channels=0`` gave an empty
    tensor, ``-1`` blamed the file)."""
    if sample_rate is not None:
        sample_rate = _whole_hz(str(path), sample_rate, MAX_SAMPLE_RATE)
    if channels is not None:
        ok = isinstance(channels, numbers.Integral) and not isinstance(channels, bool)
        if not (ok and 1 <= channels <= MAX_CHANNELS):
            raise UsageError(
                f"{path}: channels must be a whole number from 1 to {MAX_CHANNELS}, got {channels!r}"
            )
        channels = int(channels)
    return sample_rate, channels


def load(
    path: PathLike, sample_rate: int | None = None, channels: int | None = None, raw: RawFormat | None = None
) -> tuple[torch.Tensor, int]:
    """Decode a whole audio file.

    Args:
        path: wav/flac/ogg (Vorbis, Opus)/mp3, another libsndfile format or anything ffmpeg decodes.
        sample_rate: resample to this rate in Hz (soxr HQ); ``None`` keeps the file's rate.
        channels: mix to this channel count; ``None`` keeps the file's channels.
        raw: read ``path`` as headerless PCM of this format.

    Returns:
        ``(wav, rate)``: float32 tensor ``(channels, samples)`` in [-1, 1] and its rate in Hz.
    """
    path = Path(path)
    sample_rate, channels = _load_options(path, sample_rate, channels)
    with _open(path, raw) as f:
        _check_complete(path, f)
        rate = int(f.samplerate)
        data = _read_all(path, f)
    data, rate = _finish(path, data, rate, sample_rate, channels)
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def iter_blocks(
    path: PathLike,
    block_frames: int = 1 << 16,
    sample_rate: int | None = None,
    channels: int | None = None,
    raw: RawFormat | None = None,
    allow_nonfinite: bool = False,
    allow_loud: bool = False,
) -> Iterator[torch.Tensor]:
    """Walk a file in blocks of about ``block_frames`` input samples, in constant memory.

    Yields float32 tensors ``(channels, n)``; with ``sample_rate`` set, blocks are resampled by a
    streaming soxr resampler, so their concatenation equals ``load(path, sample_rate)`` up to soxr's
    streaming/offline difference (< 1e-6). Raises :class:`AudioFormatError` as :func:`load` does,
    except that ``allow_nonfinite`` passes NaN and infinite samples through (to describe such a file)
    and ``allow_loud`` samples beyond :data:`FLOAT_PEAK_LIMIT` (to describe or rescale one).
    """
    path = Path(path)
    sample_rate, channels = _load_options(path, sample_rate, channels)
    with _open(path, raw) as f:
        _check_complete(path, f)
        rate = int(f.samplerate)
        out_channels = channels or f.channels
        blocks = _iter_native(path, f, block_frames, channels, allow_nonfinite, allow_loud)
        if sample_rate is not None and sample_rate != rate:
            blocks = resample_blocks(blocks, rate, sample_rate, out_channels)
        yield from blocks


def resample_blocks(
    blocks: Iterable[torch.Tensor], orig_rate: int, target_rate: int, channels: int
) -> Iterator[torch.Tensor]:
    """Resample a stream of ``(channels, n)`` float32 blocks from ``orig_rate`` to ``target_rate`` Hz with
    one streaming soxr resampler (HQ); empty output blocks are skipped."""
    if orig_rate == target_rate:
        yield from blocks
        return
    resampler = soxr.ResampleStream(orig_rate, target_rate, channels, dtype="float32", quality="HQ")
    pending = None
    for block in blocks:
        if pending is not None:
            out = resampler.resample_chunk(pending.numpy().T, last=False)
            if out.shape[0]:
                yield torch.from_numpy(np.ascontiguousarray(out.T))
        pending = block
    if pending is not None:
        out = resampler.resample_chunk(pending.numpy().T, last=True)
        if out.shape[0]:
            yield torch.from_numpy(np.ascontiguousarray(out.T))


def _first_bad_sample(f: sf.SoundFile | ffmpeg.FfmpegReader, start: int, piece: int = 1024) -> int:
    """The first sample (to within ``piece``) at or after ``start`` that ``f`` fails to decode, found by
    seeking back to ``start`` and reading on in small pieces; ``start`` when the reader cannot seek."""
    if not isinstance(f, sf.SoundFile) or not f.seekable():
        return start
    try:
        f.seek(start)
        while f.read(piece, dtype="float32", always_2d=True).shape[0] == piece:
            start += piece
    except (sf.LibsndfileError, RuntimeError, ValueError):
        pass
    return start


def _iter_native(
    path: Path,
    f: sf.SoundFile | ffmpeg.FfmpegReader,
    block_frames: int,
    channels: int | None,
    allow_nonfinite: bool = False,
    allow_loud: bool = False,
) -> Iterator[torch.Tensor]:
    """Blocks of an open file at its own rate (channels remixed to ``channels`` when given)."""
    rate = int(f.samplerate)
    total = 0
    while True:
        try:
            with _quiet_native_stderr(_is_mp3(f)):
                block = f.read(block_frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            problem = f"truncated or corrupt audio data at sample {_first_bad_sample(f, total)} ({exc})"
            raise AudioFormatError(path, problem) from None
        last = block.shape[0] < block_frames
        total += block.shape[0]
        if total == 0 and last:
            raise AudioFormatError(path, "contains no audio samples")
        if last:
            _check_decoded_length(path, f, total)
        block, _ = _finish(path, block, rate, None, channels, allow_nonfinite, allow_loud)
        if block.shape[0]:
            yield torch.from_numpy(np.ascontiguousarray(block.T))
        if last:
            break


def path_matches(relative: Path, pattern: str) -> bool:
    """Whether a relative path matches a ``--glob`` pattern: its last parts (``*.wav``, ``alsa/*``), or
    the whole path with ``*`` crossing folders (``alsa-utils/*``, ``speech/**/x*.wav``)."""
    return relative.match(pattern) or fnmatch.fnmatchcase(relative.as_posix(), pattern)


def find_audio(
    root: Path,
    pattern: str = "*",
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    exclude: Path | None = None,
) -> list[Path]:
    """Files with ``extensions`` under ``root`` (or ``root`` itself), relative path matching ``pattern``,
    none under the folder ``exclude`` (an output folder inside ``root``, whose earlier outputs are not
    inputs). Broken links are listed too (each then fails as a missing file, not silently skipped);
    FIFOs, sockets and devices are not (reading one in a folder run could wait for ever).

    Raises :class:`UsageError` when ``root`` does not exist or holds no such file.
    """
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"{root}: no such file or directory")
    skipped = Path(os.path.abspath(exclude)) if exclude is not None else None
    files = sorted(
        p
        for p in root.rglob("*")
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and p.suffix.lower() in extensions
        and path_matches(p.relative_to(root), pattern)
        and (skipped is None or skipped not in Path(os.path.abspath(p)).parents)
    )
    if not files:
        raise UsageError(f"{root}: no files ({', '.join(extensions)}) matching {pattern!r}")
    return files


def _as_frames_by_channels(wav: torch.Tensor | np.ndarray, path: PathLike) -> np.ndarray:
    """Float ``(channels, samples)`` audio (or ``(samples,)``, ``(1, channels, samples)``) to write to
    ``path`` as the ``(samples, channels)`` float32 array libsndfile takes; :class:`UsageError` for
    integer PCM (which the float conversion would clip to full scale) and for more channels than a file
    holds (audio laid out ``(samples, channels)``)."""
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if not np.issubdtype(data.dtype, np.floating):
        pcm = np.issubdtype(data.dtype, np.integer)
        hint = "; scale integer PCM to [-1, 1] first (int16: x / 32768)" if pcm else ""
        raise UsageError(
            f"{shown_output(path)}: expected float audio in [-1, 1], got dtype {data.dtype}{hint}"
        )
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise ValueError(
            f"{shown_output(path)}: expected audio of shape (channels, samples), got {tuple(data.shape)}"
        )
    if data.shape[0] > MAX_CHANNELS:
        raise UsageError(
            f"{shown_output(path)}: expected audio of shape (channels, samples), got {tuple(data.shape)}: "
            f"more than {MAX_CHANNELS} channels; audio laid out (samples, channels) needs .T"
        )
    return np.ascontiguousarray(data.T.astype(np.float32, copy=False))


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once at import: os.umask cannot be read without setting it
NEW_FILE_MODE = 0o666 & ~UMASK
"""The permissions a new file gets from ``open``; files made 0600 by ``mkstemp`` (or a library) get these."""


TEMP_NAME = re.compile(r"^\.(?P<stem>.*)\.[a-z0-9_]{8}\.tmp(?P<suffix>.*)$")
"""How :func:`atomic_path` names its temporary files: ``.NAME.RANDOM.tmp.EXT`` (mkstemp's 8 characters)."""

_LIVE_TEMPS: dict[Path, int] = {}
"""This process's unfinished temporary files, each with a descriptor holding an exclusive ``flock`` on it:
another run's :func:`clean_stale_temps` leaves a locked one alone (the lock ends with the process, so a
killed run's files are free to remove)."""


def _new_temp(folder: Path, path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=folder)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    tmp = Path(name)
    _LIVE_TEMPS[tmp] = fd
    return tmp


def _discard(tmp: Path) -> None:
    """Remove ``tmp`` (gone already once renamed onto its output) and release its lock."""
    tmp.unlink(missing_ok=True)
    fd = _LIVE_TEMPS.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def _held_by_a_live_run(path: Path) -> bool:
    """True when another process holds ``path``'s ``flock`` (a run still writing this temporary file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_temp_files() -> None:
    """Remove every temporary file an unfinished :func:`atomic_path` holds (on a signal, before exit)."""
    for tmp in list(_LIVE_TEMPS):
        _discard(tmp)


def _through_fd_link(path: Path) -> bool:
    """True when ``path`` leads through ``/proc/*/fd`` or ``/dev/fd`` (``/dev/stdout``, ``/dev/fd/3``...)."""
    current = os.path.abspath(path)
    for _ in range(40):
        if current.startswith(("/proc/", "/dev/fd/")) or os.path.realpath(
            os.path.dirname(current)
        ).startswith("/proc/"):
            return True
        if not os.path.islink(current):
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return False


def writes_in_place(path: PathLike) -> bool:
    """True when ``path`` is written to directly, never replaced by a rename: it exists and is not a
    regular file (a device, a FIFO, a socket, a link to one), or it is an open-file link (``/dev/stdout``)."""
    if is_stdio(path):
        return True
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) or _through_fd_link(path)


@contextmanager
def readable_path(path: PathLike) -> Iterator[Path]:
    """A regular file holding what ``path`` reads: ``path`` itself, or for ``-`` (standard input), a FIFO
    or a device (``/dev/stdin``), a temporary copy of its whole stream (removed afterwards), so that it
    can be probed and read more than once. An error raised inside that names the copy is raised again
    naming what was copied (``<stdin>`` for ``-``)."""
    if not is_stdio(path):
        path = Path(path)
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            regular = True  # missing: the reader says so
        if regular:
            yield path
            return
    tmp = _new_temp(Path(tempfile.gettempdir()), Path("stdin" if is_stdio(path) else Path(path).name))
    try:
        with open(tmp, "wb") as dst:
            if is_stdio(path):
                shutil.copyfileobj(sys.stdin.buffer, dst, 1 << 20)
            else:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        yield tmp
    except AudiokitError as exc:
        shown = shown_name(path)
        if isinstance(exc, AudioFormatError) and exc.path == str(tmp):
            raise AudioFormatError(shown, exc.problem) from None
        if str(tmp) in str(exc) and type(exc).__init__ is AudiokitError.__init__:
            raise type(exc)(str(exc).replace(str(tmp), shown)) from None
        raise
    finally:
        _discard(tmp)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path ``.NAME.RANDOM.tmp.EXT``; on success it becomes ``path``.

    A regular file (or a new one) is replaced by a rename of the temporary file, made next to the real
    file so that a symlink stays a symlink; a replaced file's permissions carry over. A non-regular
    target (:func:`writes_in_place`: a FIFO, a device, ``/dev/stdout``) is never renamed onto: the
    finished temporary file (in the system's temp folder) is copied into it. On any exception, or a
    signal the CLI turns into one, the temporary file is removed, so a half-written output never appears.
    """
    if writes_in_place(path):
        stdout = is_stdio(path)
        tmp = _new_temp(Path(tempfile.gettempdir()), Path("stdout" if stdout else path))
        try:
            with _names_failures_of(path, tmp):
                yield tmp
            with open(tmp, "rb") as src, _names_failures_of(path):
                if stdout:
                    sys.stdout.flush()
                    sys.stdout.buffer.flush()
                    _write_all(src, sys.stdout.fileno())
                else:
                    with open(path, "wb", buffering=0) as dst:
                        _write_all(src, dst.fileno())
        finally:
            _discard(tmp)
        return
    path = Path(path)
    real = Path(os.path.realpath(path))
    with _names_failures_of(path):
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temp(real.parent, real)
    try:
        with _names_failures_of(path, tmp):
            yield tmp
        with _names_failures_of(path):
            try:  # a replaced file keeps its permissions (a private one stays private)
                mode = stat.S_IMODE(os.stat(real).st_mode)
            except FileNotFoundError:
                mode = NEW_FILE_MODE  # mkstemp makes 0600 files; give a new one the usual permissions
            os.chmod(tmp, mode)
            os.replace(tmp, real)
    finally:
        _discard(tmp)


def _write_all(src: BinaryIO, fd: int) -> None:
    """Copy ``src`` to the file descriptor ``fd``, every byte or an error: a buffered write to a pipe
    whose reader goes away can return a short count without raising (CPython), which would end a cut-off
    output with success; the next ``os.write`` raises :class:`BrokenPipeError` instead."""
    while chunk := src.read(1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


@contextmanager
def _names_failures_of(path: PathLike, tmp: Path | None = None) -> Iterator[None]:
    """A system error (a folder we may not write, a full device) names ``path``, not a temporary file
    or nothing; a reader of standard output that went away stays a :class:`BrokenPipeError`. With
    ``tmp`` (the body writes ``tmp``), only an error that names ``tmp`` (as either file: a copy into it)
    or no file is renamed; one naming another file (an input) is left as it is."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if tmp is not None and exc.filename is not None and str(tmp) not in (exc.filename, exc.filename2):
            raise
        shown = shown_output(path)
        raise OSError(exc.errno, exc.strerror or str(exc), shown) from None


def clean_stale_temps(outputs: Iterable[PathLike]) -> list[Path]:
    """Remove temporary files :func:`atomic_path` left next to ``outputs`` (a killed earlier run).

    Only files named as :data:`TEMP_NAME` for one of ``outputs`` (same stem and extension) in its
    folder, and held by no live run (this one, or another writing the same output now), are removed.
    Returns them.
    """
    wanted: dict[Path, set[tuple[str, str]]] = {}
    for out in outputs:
        if writes_in_place(out):
            continue
        real = Path(os.path.realpath(out))
        wanted.setdefault(real.parent, set()).add((real.stem, real.suffix))
    removed = []
    for folder, names in wanted.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = TEMP_NAME.match(entry.name)
            if (
                match
                and (match["stem"], match["suffix"]) in names
                and entry not in _LIVE_TEMPS
                and entry.is_file()
                and not entry.is_symlink()
                and not _held_by_a_live_run(entry)
            ):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _file_id(path: Path) -> tuple[int, int] | None:
    """The file ``path`` is (device, inode); for ``-``, standard input's (a file redirected into it)."""
    try:
        st = os.fstat(sys.stdin.fileno()) if is_stdio(path) else os.stat(path)
    except (OSError, ValueError, AttributeError):  # ValueError/AttributeError: stdin closed or None
        return None
    return st.st_dev, st.st_ino


def check_outputs(
    jobs: Iterable[tuple[object, PathLike]], force: bool = False, inputs: Iterable[PathLike] = ()
) -> None:
    """Refuse, before anything is written, outputs that would lose data (one UsageError line).

    ``jobs`` are ``(source, output)`` pairs; ``source`` is the input file the output is made from (a
    :class:`~pathlib.Path`, also checked as an input) or a label such as ``"--csv"``. ``inputs``: more
    files that must not be written. Refused: an output that is an input (the same file after resolving
    links, hard links too); two sources with one output; an existing directory as output; an existing
    regular file unless ``force``. Non-regular targets (FIFOs, devices, ``/dev/stdout``) are allowed.
    """
    jobs = [(source, Path(out)) for source, out in jobs if not is_stdio(out)]
    input_ids: dict[tuple[int, int], Path] = {}
    for path in [*(Path(p) for p in inputs), *(s for s, _ in jobs if isinstance(s, Path))]:
        file_id = _file_id(path)
        if file_id is not None:
            input_ids.setdefault(file_id, path)
    seen: dict[str, tuple[object, Path]] = {}
    existing: list[Path] = []
    for source, out in jobs:
        file_id = _file_id(out)
        if file_id in input_ids:
            overwritten = input_ids[file_id]
            shown = "<stdin> (the file redirected into it)" if is_stdio(overwritten) else overwritten
            raise UsageError(f"{out}: the output would overwrite the input {shown}")
        key = os.path.realpath(out)
        if key in seen:
            other, other_out = seen[key]
            shown = out if other_out == out else f"{out} (= {other_out})"
            raise UsageError(f"{other} and {source} would both be written to {shown}")
        seen[key] = (source, out)
        if out.is_dir():
            raise UsageError(f"{out}: is a directory; give a file name")
        _check_writable_folder(out)
        if file_id is not None and not writes_in_place(out):
            existing.append(out)
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]}{more}: already exists; pass -f/--force to overwrite")


def _check_writable_folder(out: Path) -> None:
    """UsageError when ``out`` cannot be created: a parent is a file, or the nearest existing folder
    is not writable."""
    if writes_in_place(out):
        return
    folder = Path(os.path.realpath(out)).parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{out}: cannot create it under {folder}, which is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: the folder {folder} is not writable")


def prepare_outputs(
    jobs: Iterable[tuple[object, PathLike]], force: bool = False, inputs: Iterable[PathLike] = ()
) -> None:
    """:func:`check_outputs`, then :func:`clean_stale_temps` for those outputs: what every command that
    writes files calls before it writes anything."""
    jobs = list(jobs)
    check_outputs(jobs, force, inputs)
    clean_stale_temps(out for _, out in jobs)


def _format_and_subtype(path: Path, subtype: str | None) -> tuple[str | None, str | None]:
    suffix = output_extension(path)  # UsageError for an unknown extension
    fmt = {".opus": "OGG", ".ogg": "OGG", ".mp3": "MP3", ".wav": "WAV", ".aif": "AIFF"}.get(suffix)
    if suffix == ".opus" and subtype is None:
        subtype = "OPUS"
    return fmt, subtype


def save(
    path: PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> None:
    """Write float ``(channels, samples)`` audio in [-1, 1] (or ``(samples,)``) atomically (temp file +
    rename); format from the extension. Integer PCM and audio laid out ``(samples, channels)`` raise
    :class:`UsageError`.

    ``subtype`` is a soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ``"OPUS"``...);
    ``None`` takes the format's default (16-bit PCM for WAV/FLAC).
    """
    with open_writer(path, sample_rate, _as_frames_by_channels(wav, path).shape[1], subtype) as write:
        write(wav)


def _whole_hz(name: str, sample_rate: int, most: float = math.inf) -> int:
    """``sample_rate`` as an int of Hz (a whole number from 1 to ``most``, of any number type), else
    :class:`UsageError` naming the file ``name`` (libsndfile answered 0 Hz with "SF_INFO struct
    incomplete", soxr 10^9 Hz with ``std::bad_alloc``, and 16000.5 Hz came back as a float rate)."""
    value = sample_rate
    if isinstance(value, torch.Tensor) and not value.dim():
        value = value.item()
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value == int(value) and 1 <= value <= most):
        bounds = "from 1" if most == math.inf else f"from 1 to {most:g}"
        raise UsageError(
            f"{name}: sample_rate must be a whole number of Hz {bounds}, got {sample_rate!r}"
        )
    return int(value)


@contextmanager
def open_writer(
    path: PathLike, sample_rate: int, channels: int, subtype: str | None = None
) -> Iterator[Callable[[torch.Tensor | np.ndarray], None]]:
    """Write a file block by block in constant memory, atomically: yields ``write(block)``.

    Each block is ``(channels, n)`` audio; the file appears at ``path`` only when the ``with`` block
    ends without an exception. Format from the extension, ``subtype`` as in :func:`save`.
    """
    fmt, subtype = _format_and_subtype(Path(path), subtype)
    rate = _whole_hz(shown_output(path), sample_rate)
    with atomic_path(path) as tmp, _libsndfile_failures_name(path, tmp):
        with sf.SoundFile(os.fsencode(tmp), "w", rate, channels, subtype=subtype, format=fmt) as handle:

            def write(block: torch.Tensor | np.ndarray) -> None:
                data = _as_frames_by_channels(block, path)
                if not np.isfinite(data).all():
                    raise ValueError(f"{path}: refusing to write NaN or infinite samples")
                handle.write(data)

            yield write


LOW_SPACE_BYTES = 1 << 20
"""Free space (bytes) below which a failed write is reported as a full device."""


@contextmanager
def _libsndfile_failures_name(path: PathLike, tmp: Path) -> Iterator[None]:
    """A libsndfile failure while writing ``tmp`` (its "System error." hides the errno) becomes an
    :class:`OSError` naming ``path``: "No space left on device" when the device of ``tmp`` is (nearly)
    full, else libsndfile's own words."""
    try:
        yield
    except sf.LibsndfileError as exc:
        shown = shown_output(path)
        try:
            stats = os.statvfs(tmp.parent)
            full = stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES
        except OSError:
            full = False
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), shown) from None
        raise OSError(errno.EIO, f"cannot write the audio ({exc.error_string})", shown) from None
