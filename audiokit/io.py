"""Audio file I/O: load any supported format, resample, remix channels, save atomically.

Formats are read through soundfile (libsndfile): WAV/FLAC/OGG (Vorbis, Opus)/MP3 and the other
formats libsndfile knows. Resampling uses soxr at high quality. Every problem with an input file
raises :class:`AudioFormatError` whose one-line message names the file and the problem.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from audiokit.errors import AudioFormatError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")

PathLike = str | os.PathLike


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


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioFormatError(path, "file not found")
    if path.is_dir():
        raise AudioFormatError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioFormatError(path, "file is empty (0 bytes)")


def _open(path: Path) -> sf.SoundFile:
    _check_readable(path)
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(":")[-1].strip() or "unreadable"
        raise AudioFormatError(
            path, f"not a readable audio file (wav/flac/ogg/opus/mp3 expected): {reason}"
        ) from None


def info(path: PathLike) -> AudioInfo:
    """Read the header of ``path`` without decoding the audio."""
    path = Path(path)
    with _open(path) as f:
        return AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(T, C)`` float32 audio from ``orig_rate`` to ``target_rate`` Hz with soxr (HQ)."""
    if orig_rate == target_rate or wav.shape[0] == 0:
        return wav
    return soxr.resample(wav, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def remix(wav: np.ndarray, channels: int) -> np.ndarray:
    """Map ``(T, C)`` audio to ``channels``: average to mono, repeat mono, or keep the first channels.

    Raises ``ValueError`` when asked to go from several channels to more channels.
    """
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


def _wav_is_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds."""
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
                return chunk_size not in (0, 0xFFFFFFFF) and offset + 8 + chunk_size > size
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


def _check_complete(path: Path, f: sf.SoundFile) -> None:
    truncated = (f.format in ("WAV", "WAVEX") and _wav_is_truncated(path)) or (
        f.format == "OGG" and _ogg_is_truncated(path)
    )
    if truncated:
        raise AudioFormatError(path, "truncated: the file ends before its audio data does")


def _read_all(path: Path, f: sf.SoundFile) -> np.ndarray:
    try:
        data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFormatError(path, f"truncated or corrupt audio data ({exc})") from None
    if data.shape[0] == 0:
        raise AudioFormatError(path, "contains no audio samples")
    return data


def _finish(path: Path, data: np.ndarray, rate: int, sample_rate: int | None, channels: int | None):
    if not np.isfinite(data).all():
        raise AudioFormatError(path, "contains NaN or infinite samples")
    if channels is not None:
        try:
            data = remix(data, channels)
        except ValueError as exc:
            raise AudioFormatError(path, str(exc)) from None
    if sample_rate is not None:
        data = resample(data, rate, sample_rate)
        rate = sample_rate
    return data, rate


def load(
    path: PathLike, sample_rate: int | None = None, channels: int | None = None
) -> tuple[torch.Tensor, int]:
    """Decode a whole audio file.

    Args:
        path: wav/flac/ogg (Vorbis, Opus)/mp3 or another libsndfile format.
        sample_rate: resample to this rate in Hz (soxr HQ); ``None`` keeps the file's rate.
        channels: mix to this channel count; ``None`` keeps the file's channels.

    Returns:
        ``(wav, rate)``: float32 tensor ``(channels, samples)`` in [-1, 1] and its rate in Hz.
    """
    path = Path(path)
    with _open(path) as f:
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
) -> Iterator[torch.Tensor]:
    """Walk a file in blocks of about ``block_frames`` input samples, in constant memory.

    Yields float32 tensors ``(channels, n)``; with ``sample_rate`` set, blocks are resampled by a
    streaming soxr resampler, so their concatenation equals ``load(path, sample_rate)`` up to soxr's
    streaming/offline difference (< 1e-6). Raises :class:`AudioFormatError` as :func:`load` does.
    """
    path = Path(path)
    with _open(path) as f:
        _check_complete(path, f)
        rate = int(f.samplerate)
        out_channels = channels or f.channels
        resampler = None
        if sample_rate is not None and sample_rate != rate:
            resampler = soxr.ResampleStream(rate, sample_rate, out_channels, dtype="float32", quality="HQ")
        total = 0
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise AudioFormatError(
                    path, f"truncated or corrupt audio data at sample {total} ({exc})"
                ) from None
            last = block.shape[0] < block_frames
            total += block.shape[0]
            if total == 0 and last:
                raise AudioFormatError(path, "contains no audio samples")
            block, _ = _finish(path, block, rate, None, channels)
            if resampler is not None:
                block = resampler.resample_chunk(block, last=last)
            if block.shape[0]:
                yield torch.from_numpy(np.ascontiguousarray(block.T))
            if last:
                break


def _as_frames_by_channels(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise ValueError(f"expected audio of shape (channels, samples), got {tuple(data.shape)}")
    return np.ascontiguousarray(data.T.astype(np.float32, copy=False))


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once at import: os.umask cannot be read without setting it


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it is renamed onto ``path`` only on success.

    On any exception the temporary file is removed, so a half-written output never appears.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _format_and_subtype(path: Path, subtype: str | None) -> tuple[str | None, str | None]:
    fmt = {".opus": "OGG", ".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix.lower())
    if path.suffix.lower() == ".opus" and subtype is None:
        subtype = "OPUS"
    return fmt, subtype


def save(
    path: PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> None:
    """Write ``(channels, samples)`` audio atomically (temp file + rename); format from the extension.

    ``subtype`` is a soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ``"OPUS"``...);
    ``None`` takes the format's default (16-bit PCM for WAV/FLAC).
    """
    with open_writer(path, sample_rate, _as_frames_by_channels(wav).shape[1], subtype) as write:
        write(wav)


@contextmanager
def open_writer(
    path: PathLike, sample_rate: int, channels: int, subtype: str | None = None
) -> Iterator[Callable[[torch.Tensor | np.ndarray], None]]:
    """Write a file block by block in constant memory, atomically: yields ``write(block)``.

    Each block is ``(channels, n)`` audio; the file appears at ``path`` only when the ``with`` block
    ends without an exception. Format from the extension, ``subtype`` as in :func:`save`.
    """
    path = Path(path)
    fmt, subtype = _format_and_subtype(path, subtype)
    with atomic_path(path) as tmp, sf.SoundFile(
        str(tmp), "w", int(sample_rate), channels, subtype=subtype, format=fmt
    ) as handle:

        def write(block: torch.Tensor | np.ndarray) -> None:
            data = _as_frames_by_channels(block)
            if not np.isfinite(data).all():
                raise ValueError(f"{path}: refusing to write NaN or infinite samples")
            handle.write(data)

        yield write
