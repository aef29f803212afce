"""The ``.akc`` container: codec codes bit-packed at their true width, in CRC-checked chunks.

The byte layout (versions 1 to 3) is specified in ``docs/bitstream.md``. In short::

    header   magic "AKC\\0", u16 version, u16 header size, fixed fields, model name, weights hash,
             [v2, v3: u32 source rate], [v3: u32 entropy model id], CRC32
    chunks   u16 frames, [v3: u32 payload size], payload (codes of <= 1 s of frames: `codebook_bits`
             bits each, or v3: range-coded by :mod:`audiokit.entropy`), CRC32
    trailer  u16 0, [v3: u32 size of each chunk], u64 frames, u64 samples, [v2, v3: u64 source samples],
             CRC32

Version 2 is version 1 plus the rate and length of the audio that was encoded (before resampling to
the model's rate), so a decoder can give back the original rate and length exactly; every version-1
field keeps its offset and both versions are read. A header without ``source_rate`` writes version 1.
Version 3 is version 2 with entropy-coded chunks (header flag 1, the id of the probability model in the
header); a header with ``entropy_model`` writes it.

Every chunk but the last holds ``chunk_frames`` frames. In versions 1 and 2 every full chunk has the
same size, so chunk ``i`` starts at ``data_offset + i * chunk_stride``: the seek index is implied by the
header and works while the file is still being written. Version-3 chunks vary in size: the trailer
lists them (the seek index), and a file still being written is indexed by walking the chunk heads.
Codes are ``[channels, num_codebooks, frames]`` int64 in ``[0, codebook_size)``.
All integers are little-endian. Malformed input raises :class:`BitstreamError` naming the byte offset.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import accumulate
from typing import BinaryIO

import numpy as np
import torch

from audiokit.entropy import EntropyCoder, EntropyDecodeError, max_payload_size
from audiokit.errors import BitstreamError, UsageError
from audiokit.io import atomic_path

MAGIC = b"AKC\x00"
VERSION = 2
VERSIONS = (1, 2, 3)
FLAG_ENTROPY = 0x01  # header flag of version 3: entropy-coded chunks
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64
MAX_CODEBOOKS = 64
MAX_CODEBOOK_SIZE = 1 << 16
MAX_CHUNK_FRAMES = 0xFFFF
MAX_NUM_SAMPLES = (1 << 48) - 1
MAX_TEXT_BYTES = 255
UNKNOWN_NUM_SAMPLES = (1 << 64) - 1

_PREFIX = struct.Struct("<4sHH")  # magic, version, header size
_FIXED = struct.Struct("<IHBBIIIHQ")  # rate, channels, codebooks, flags, size, fr num, fr den, chunk, samples
_FIELD_OFFSETS = {
    "sample_rate": 8,
    "channels": 12,
    "num_codebooks": 14,
    "flags": 15,
    "codebook_size": 16,
    "frame_rate": 20,
    "chunk_frames": 28,
    "num_samples": 30,
    "model_name": 38,
}
MIN_HEADER_SIZE = _PREFIX.size + _FIXED.size + 1 + 1 + 4  # 44: both strings empty
MAX_HEADER_SIZE = MIN_HEADER_SIZE + 2 * MAX_TEXT_BYTES
_CHUNK_HEAD = struct.Struct("<H")
_CRC = struct.Struct("<I")
_TRAILER = struct.Struct("<HQQ")
_TRAILER_V2 = struct.Struct("<HQQQ")  # + source samples
_SOURCE_RATE = struct.Struct("<I")
_ENTROPY_ID = struct.Struct("<I")
_SIZE_FIELDS = (struct.Struct("<H"), struct.Struct("<I"))  # version 3: chunk and payload sizes
_ENTROPY_TRAILER = struct.Struct("<QQQ")  # frames, samples, source samples (after marker and index)
TRAILER_SIZE = _TRAILER.size + _CRC.size  # 22 (version 1; version 2: 30)
CHUNK_OVERHEAD = _CHUNK_HEAD.size + _CRC.size  # 6


@dataclass(frozen=True)
class AkcHeader:
    """What a decoder needs to know about an ``.akc`` stream.

    ``frame_rate`` is exact (``Fraction(sample_rate, hop_length)``; ints and exactly representable
    floats are converted). ``num_samples`` is the exact audio length in samples, or ``None`` while a
    streaming writer does not know it yet. ``chunk_frames`` is the number of frames per chunk
    (``0`` picks the default: one second's worth, ``floor(frame_rate)``, at least 1).

    ``source_rate`` / ``source_samples``: the rate (Hz) and length (samples) of the audio that was
    encoded, before it was resampled to ``sample_rate`` (version 2 files; ``None`` in version 1 files,
    and ``source_samples`` ``None`` until the trailer gives it). A header with ``source_rate`` is
    written as version 2.

    ``entropy_model``: the ``model_id`` (u32) of the probability model the chunks are entropy-coded with
    (:class:`~audiokit.entropy.EntropyModel` or :class:`~audiokit.entropy_model.PriorModel`); a header
    with it is written as version 3 (and needs ``source_rate``).
    """

    model_name: str
    weights_hash: str
    sample_rate: int
    channels: int
    num_codebooks: int
    codebook_size: int
    frame_rate: Fraction
    num_samples: int | None = None
    chunk_frames: int = 0
    source_rate: int | None = None
    source_samples: int | None = None
    entropy_model: int | None = None

    def __post_init__(self) -> None:
        rate = self.frame_rate
        if isinstance(rate, float):
            exact = Fraction(rate).limit_denominator(0xFFFF)
            if float(exact) != rate:
                raise ValueError(f"frame_rate {rate} is not exact: pass Fraction(sample_rate, hop_length)")
            rate = exact
        object.__setattr__(self, "frame_rate", Fraction(rate))
        if self.chunk_frames == 0:
            default = min(max(1, math.floor(self.frame_rate)), MAX_CHUNK_FRAMES)
            object.__setattr__(self, "chunk_frames", default)
        problem = _header_problem(self)
        if problem is not None:
            raise ValueError(problem[1])

    @property
    def codebook_bits(self) -> int:
        """Bits per stored code: ``ceil(log2(codebook_size))``."""
        return (self.codebook_size - 1).bit_length()

    @property
    def bitrate(self) -> float:
        """Nominal bitrate in bits/s: ``channels * num_codebooks * codebook_bits * frame_rate``."""
        return float(self.channels * self.num_codebooks * self.codebook_bits * self.frame_rate)

    @property
    def version(self) -> int:
        """The file version this header is written as: 3 with ``entropy_model``, 2 with ``source_rate``,
        else 1."""
        if self.entropy_model is not None:
            return 3
        return 1 if self.source_rate is None else 2

    @property
    def entropy_coded(self) -> bool:
        """Whether the chunks are entropy-coded (version 3)."""
        return self.entropy_model is not None

    @property
    def encoded_size(self) -> int:
        """Bytes of the encoded header (magic to header CRC)."""
        extra = _EXTRA_HEADER_BYTES[self.version]
        return MIN_HEADER_SIZE + len(self.model_name.encode()) + len(self.weights_hash.encode()) + extra

    @property
    def trailer_size(self) -> int:
        """Bytes of the trailer of versions 1 (22) and 2 (30); version 3 adds 4 bytes a chunk to 30."""
        return (_TRAILER if self.version == 1 else _TRAILER_V2).size + _CRC.size

    def max_chunk_size(self, frames: int) -> int:
        """Largest chunk (bytes, frame count to CRC) of ``frames`` frames this header allows."""
        if not self.entropy_coded:
            return CHUNK_OVERHEAD + self.payload_size(frames)
        count = frames * self.channels * self.num_codebooks
        return _CHUNK_HEAD.size + self.size_field.size + max_payload_size(count) + _CRC.size

    @property
    def size_field(self) -> struct.Struct:
        """Version 3: the integer of a chunk's payload size and of a chunk index entry: u16 when any chunk
        fits in 65535 bytes, else u32."""
        count = self.chunk_frames * self.channels * self.num_codebooks
        largest = _CHUNK_HEAD.size + _SIZE_FIELDS[1].size + max_payload_size(count) + _CRC.size
        return _SIZE_FIELDS[0] if largest <= 0xFFFF else _SIZE_FIELDS[1]

    @property
    def original_rate(self) -> int:
        """The encoded audio's own rate (Hz): ``source_rate``, else (version 1) ``sample_rate``."""
        return self.sample_rate if self.source_rate is None else self.source_rate

    @property
    def original_samples(self) -> int | None:
        """The encoded audio's own length in samples: ``source_samples``, else (version 1) ``num_samples``."""
        return self.num_samples if self.source_rate is None else self.source_samples

    def payload_size(self, frames: int) -> int:
        """Bytes of the bit-packed codes of ``frames`` frames."""
        return (frames * self.channels * self.num_codebooks * self.codebook_bits + 7) // 8

    @property
    def chunk_stride(self) -> int:
        """Bytes of one full chunk (frame count, payload, CRC)."""
        return CHUNK_OVERHEAD + self.payload_size(self.chunk_frames)

    def encode(self) -> bytes:
        """The header's bytes, CRC included."""
        name, digest = self.model_name.encode(), self.weights_hash.encode()
        num_samples = UNKNOWN_NUM_SAMPLES if self.num_samples is None else self.num_samples
        body = (
            _PREFIX.pack(MAGIC, self.version, self.encoded_size)
            + _FIXED.pack(
                self.sample_rate,
                self.channels,
                self.num_codebooks,
                FLAG_ENTROPY if self.entropy_coded else 0,
                self.codebook_size,
                self.frame_rate.numerator,
                self.frame_rate.denominator,
                self.chunk_frames,
                num_samples,
            )
            + bytes([len(name)])
            + name
            + bytes([len(digest)])
            + digest
            + (b"" if self.source_rate is None else _SOURCE_RATE.pack(self.source_rate))
            + (b"" if self.entropy_model is None else _ENTROPY_ID.pack(self.entropy_model))
        )
        return body + _CRC.pack(zlib.crc32(body))


def _header_problem(h: AkcHeader) -> tuple[str, str] | None:
    """The first out-of-bounds field of ``h`` as ``(field, problem)``, or ``None``."""
    rate = h.frame_rate
    if not (0 < rate <= h.sample_rate and max(rate.numerator, rate.denominator) <= 0xFFFFFFFF):
        return "frame_rate", f"frame rate {rate} Hz not in (0, sample rate] or not a ratio of u32s"
    one_second = min(max(1, math.floor(rate)), MAX_CHUNK_FRAMES)
    limits = [
        ("sample_rate", "sample rate (Hz)", h.sample_rate, 1, MAX_SAMPLE_RATE),
        ("channels", "channel count", h.channels, 1, MAX_CHANNELS),
        ("num_codebooks", "codebook count", h.num_codebooks, 1, MAX_CODEBOOKS),
        ("codebook_size", "codebook size", h.codebook_size, 2, MAX_CODEBOOK_SIZE),
        ("chunk_frames", "frames per chunk (at most 1 s)", h.chunk_frames, 1, one_second),
        ("num_samples", "sample count", 0 if h.num_samples is None else h.num_samples, 0, MAX_NUM_SAMPLES),
    ]
    if h.source_rate is not None:
        limits.append(("source_rate", "source sample rate (Hz)", h.source_rate, 1, MAX_SAMPLE_RATE))
        if h.source_samples is not None:
            limits.append(("source_samples", "source sample count", h.source_samples, 0, MAX_NUM_SAMPLES))
    if h.entropy_model is not None:
        if h.source_rate is None:
            return "entropy_model", "an entropy-coded (version 3) header needs source_rate"
        limits.append(("entropy_model", "entropy model id", h.entropy_model, 0, 0xFFFFFFFF))
    for field_name, what, value, low, high in limits:
        if not low <= value <= high:
            return field_name, f"{what} {value} not in {low}..{high}"
    if not _valid_text(h.model_name):
        return "model_name", "model name must be printable UTF-8 of at most 255 bytes"
    if not _valid_text(h.weights_hash, ascii_only=True):
        return "weights_hash", "weights hash must be printable ASCII of at most 255 bytes"
    return None


_EXTRA_HEADER_BYTES = {1: 0, 2: _SOURCE_RATE.size, 3: _SOURCE_RATE.size + _ENTROPY_ID.size}


def _valid_text(text: str, ascii_only: bool = False) -> bool:
    raw = text.encode("utf-8", errors="replace")
    return (
        isinstance(text, str)
        and text.isprintable()
        and len(raw) <= MAX_TEXT_BYTES
        and (not ascii_only or text.isascii())
    )


def _samples_fit(h: AkcHeader, num_frames: int, num_samples: int) -> bool:
    """True when ``num_frames`` frames cover ``num_samples`` samples (``samples <= frames * hop``)."""
    return num_samples * h.frame_rate.numerator <= num_frames * h.sample_rate * h.frame_rate.denominator


def _source_fits(h: AkcHeader, num_samples: int, source_samples: int) -> bool:
    """True when ``source_samples`` at ``h.source_rate`` lasts as long as ``num_samples`` at
    ``h.sample_rate``, within a few samples (what resampling one to the other gives)."""
    slack = 4 * max(h.sample_rate, h.source_rate)
    return abs(source_samples * h.sample_rate - num_samples * h.source_rate) <= slack


# -- bit packing ----------------------------------------------------------------------------------
def pack_codes(values: np.ndarray, bits: int) -> bytes:
    """Concatenate ``values`` (ints in ``[0, 2**bits)``) as ``bits``-bit MSB-first fields, zero-padded
    to a whole byte."""
    if bits < 1 or bits > 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    wide = np.ascontiguousarray(values, dtype=">u2").view(np.uint8).reshape(-1, 2)
    return np.packbits(np.unpackbits(wide, axis=1)[:, 16 - bits :]).tobytes()


def unpack_codes(payload: bytes | memoryview, count: int, bits: int) -> tuple[np.ndarray, bool]:
    """Inverse of :func:`pack_codes`: ``(values int64 [count], padding_is_zero)``.

    ``payload`` must hold exactly ``ceil(count * bits / 8)`` bytes.
    """
    flat = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    fields = np.zeros((count, 16), dtype=np.uint8)
    fields[:, 16 - bits :] = flat[: count * bits].reshape(count, bits)
    values = np.packbits(fields, axis=1).view(">u2").reshape(count).astype(np.int64)
    return values, not flat[count * bits :].any()


# -- sources --------------------------------------------------------------------------------------
class _Source:
    """Random-access bytes with a name for messages and a count of bytes read."""

    name: str
    bytes_read: int = 0
    reads: int = 0

    def size(self) -> int:
        raise NotImplementedError

    def _read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def read(self, offset: int, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes at ``offset``; a :class:`BitstreamError` when the source ends first."""
        size = self.size()
        if offset + n > size:
            raise BitstreamError(
                f"{self.name}: byte {min(offset, size)}: truncated {what} (file ends at byte {size})"
            )
        data = self._read(offset, n)
        if len(data) != n:
            raise BitstreamError(f"{self.name}: byte {offset + len(data)}: truncated {what}")
        self.bytes_read += n
        self.reads += 1
        return data

    def close(self) -> None:
        """Release the underlying file, if any."""


class _BytesSource(_Source):
    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>") -> None:
        self._data = memoryview(data).cast("B")
        self.name = name

    def size(self) -> int:
        return len(self._data)

    def _read(self, offset: int, n: int) -> bytes:
        return bytes(self._data[offset : offset + n])


class _FileSource(_Source):
    def __init__(self, path: str | os.PathLike) -> None:
        self.name = str(path)
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise BitstreamError(f"{self.name}: byte 0: cannot open ({exc.strerror})") from None

    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _read(self, offset: int, n: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(n)

    def close(self) -> None:
        self._file.close()


def _error(source: _Source, offset: int, problem: str) -> BitstreamError:
    return BitstreamError(f"{source.name}: byte {offset}: {problem}")


def _parse_header(source: _Source) -> tuple[AkcHeader, int]:
    """Header and its CRC (which seeds every chunk and trailer CRC)."""
    size = source.size()
    if size < _PREFIX.size:
        raise _error(source, 0, f"file of {size} bytes is too short to be an .akc file")
    magic, version, header_size = _PREFIX.unpack(source.read(0, _PREFIX.size, "header"))
    if magic != MAGIC:
        raise _error(source, 0, f"not an .akc file (magic {magic!r}, expected {MAGIC!r})")
    if version not in VERSIONS:
        known = ", ".join(map(str, VERSIONS[:-1])) + f" and {VERSIONS[-1]}"
        raise _error(source, 4, f"unsupported .akc version {version} (this build reads versions {known})")
    extra = _EXTRA_HEADER_BYTES[version]
    low, high = MIN_HEADER_SIZE + extra, MAX_HEADER_SIZE + extra
    if not low <= header_size <= high:
        raise _error(source, 6, f"header size {header_size} not in {low}..{high}")
    raw = source.read(0, header_size, "header")
    header_crc = zlib.crc32(raw[:-4])
    if header_crc != _CRC.unpack_from(raw, header_size - 4)[0]:
        raise _error(source, header_size - 4, "header CRC mismatch (corrupt header)")
    rate, channels, codebooks, flags, cb_size, fr_num, fr_den, chunk_frames, num_samples = _FIXED.unpack_from(
        raw, _PREFIX.size
    )
    expected_flags = FLAG_ENTROPY if version == 3 else 0
    if flags != expected_flags:
        problem = f"header flags {flags:#04x}, version {version} has {expected_flags:#04x}"
        raise _error(source, _FIELD_OFFSETS["flags"], problem)
    if fr_num == 0 or fr_den == 0:
        raise _error(source, _FIELD_OFFSETS["frame_rate"], f"frame rate {fr_num}/{fr_den} has a zero term")
    pos = _PREFIX.size + _FIXED.size
    name_len = raw[pos]
    digest_pos = pos + 1 + name_len
    end = header_size - 4 - extra  # end of the weights hash
    if digest_pos + 1 > end or digest_pos + 1 + raw[digest_pos] != end:
        raise _error(source, pos, "model name and weights hash lengths do not add up to the header size")
    source_rate = _SOURCE_RATE.unpack_from(raw, end)[0] if version >= 2 else None
    entropy_model = _ENTROPY_ID.unpack_from(raw, end + _SOURCE_RATE.size)[0] if version == 3 else None
    try:
        name = raw[pos + 1 : digest_pos].decode("utf-8")
    except UnicodeDecodeError:
        raise _error(source, pos, "model name is not valid UTF-8") from None
    try:
        digest = raw[digest_pos + 1 : end].decode("ascii")
    except UnicodeDecodeError:
        raise _error(source, digest_pos, "weights hash is not ASCII") from None
    header = AkcHeader.__new__(AkcHeader)
    values = dict(
        model_name=name,
        weights_hash=digest,
        sample_rate=rate,
        channels=channels,
        num_codebooks=codebooks,
        codebook_size=cb_size,
        frame_rate=Fraction(fr_num, fr_den),
        num_samples=None if num_samples == UNKNOWN_NUM_SAMPLES else num_samples,
        chunk_frames=chunk_frames,
        source_rate=source_rate,
        source_samples=None,
        entropy_model=entropy_model,
    )
    for key, value in values.items():
        object.__setattr__(header, key, value)
    problem = _header_problem(header)
    if problem is not None:
        offset = _FIELD_OFFSETS.get(problem[0], end if problem[0] == "source_rate" else digest_pos)
        raise _error(source, offset, problem[1])
    return header, header_crc


class AkcReader:
    """Random-access reader of an ``.akc`` file (path) or of its bytes (``bytes``/``bytearray``).

    ``partial=False`` requires a complete file (trailer present). ``partial=True`` also accepts a
    file that is still being written: the full chunks written so far are readable and
    :meth:`refresh` picks up new ones (and the trailer once the writer closes). Only the bytes a call
    needs are read; ``bytes_read`` counts them.

    Entropy-coded (version 3) chunks are decoded with ``entropy``, or, when that is ``None``, with the
    model :func:`audiokit.coding.entropy_model_for` finds for the header's weights and model id (on the
    first chunk read).
    """

    def __init__(
        self,
        source: str | os.PathLike | bytes | bytearray | memoryview,
        *,
        partial: bool = False,
        entropy: EntropyCoder | None = None,
    ) -> None:
        self._source: _Source = (
            _BytesSource(source)
            if isinstance(source, bytes | bytearray | memoryview)
            else _FileSource(source)
        )
        self.partial = partial
        self._entropy = entropy
        self._chunk_sizes: list[int] = []  # version 3: byte size of each chunk known so far
        self._chunk_starts: list[int] = []
        try:
            self.header, self._crc_seed = _parse_header(self._source)
            self._data_offset = self.header.encoded_size
            self.refresh()
        except BaseException:
            self._source.close()
            raise

    # -- state ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the file size (and trailer) to see chunks written since the last look."""
        if self.header.entropy_coded:
            self._refresh_indexed()
            return
        h, src = self.header, self._source
        size = src.size()
        body = size - self._data_offset
        trailer_size = h.trailer_size
        self.complete = False
        if body >= trailer_size:
            trailer = self._parse_trailer(size - trailer_size)
            if trailer is not None:
                num_frames, num_samples, source_samples = trailer
                full, rest = divmod(num_frames, h.chunk_frames)
                expected = full * h.chunk_stride + (CHUNK_OVERHEAD + h.payload_size(rest) if rest else 0)
                if expected + trailer_size != body:
                    found = body - trailer_size
                    problem = f"trailer says {num_frames} frames ({expected} bytes of chunks), found {found}"
                    raise _error(src, size - trailer_size, problem)
                self.complete = True
                self.num_frames = num_frames
                self.num_chunks = full + (1 if rest else 0)
                self.header = replace(h, num_samples=num_samples, source_samples=source_samples)
                return
        if not self.partial:
            problem = "no trailer: the file is truncated or was not closed by its writer"
            raise _error(src, max(self._data_offset, size - trailer_size), problem)
        self.num_chunks = max(body, 0) // h.chunk_stride
        self.num_frames = self.num_chunks * h.chunk_frames

    def _refresh_indexed(self) -> None:
        """:meth:`refresh` of a version-3 file: the trailer's chunk index, or (partial) the chunk heads."""
        h, src = self.header, self._source
        size = src.size()
        self.complete = False
        tail = _ENTROPY_TRAILER.size + _CRC.size
        if size - self._data_offset >= tail + _CHUNK_HEAD.size:
            found = self._parse_indexed_trailer(size)
            if found is not None:
                num_frames, num_samples, source_samples, sizes = found
                self.complete = True
                self.num_frames = num_frames
                self._set_chunks(sizes)
                self.header = replace(h, num_samples=num_samples, source_samples=source_samples)
                return
        if not self.partial:
            problem = "no trailer: the file is truncated or was not closed by its writer"
            raise _error(src, max(self._data_offset, size - tail), problem)
        # still being written: walk the heads of the full chunks written so far
        pos = self._data_offset + sum(self._chunk_sizes)
        sizes = list(self._chunk_sizes)
        field = h.size_field
        head_size = _CHUNK_HEAD.size + field.size
        while pos + head_size <= size:
            head = src.read(pos, head_size, "chunk head")
            (frames,), (payload,) = _CHUNK_HEAD.unpack_from(head), field.unpack_from(head, _CHUNK_HEAD.size)
            chunk = head_size + payload + _CRC.size
            if frames != h.chunk_frames or chunk > h.max_chunk_size(frames) or pos + chunk > size:
                break  # the trailer, or a chunk not yet fully written (its CRC is checked when read)
            sizes.append(chunk)
            pos += chunk
        self._set_chunks(sizes)
        self.num_frames = self.num_chunks * h.chunk_frames

    def _set_chunks(self, sizes: list[int]) -> None:
        self._chunk_sizes = sizes
        self._chunk_starts = list(accumulate(sizes, initial=self._data_offset))[:-1]
        self.num_chunks = len(sizes)

    def _parse_indexed_trailer(self, size: int) -> tuple[int, int, int, list[int]] | None:
        """``(num_frames, num_samples, source_samples, chunk sizes)`` of a valid version-3 trailer at the
        end of ``size`` bytes; ``None`` when there is none (in partial mode)."""
        h, src = self.header, self._source
        fields_at = size - _ENTROPY_TRAILER.size - _CRC.size
        raw = src.read(fields_at, _ENTROPY_TRAILER.size + _CRC.size, "trailer")
        num_frames, num_samples, source_samples = _ENTROPY_TRAILER.unpack_from(raw)
        num_chunks = -(-num_frames // h.chunk_frames)
        field = h.size_field
        index_size = num_chunks * field.size
        marker_at = fields_at - index_size - _CHUNK_HEAD.size
        if num_frames > MAX_NUM_SAMPLES or marker_at < self._data_offset:
            if self.partial:
                return None
            problem = (
                "no trailer: the file is truncated or was not closed by its writer (its last bytes read "
                f"as {num_frames} frames, an index that does not fit in the file)"
            )
            raise _error(src, fields_at, problem)
        head = src.read(marker_at, _CHUNK_HEAD.size + index_size, "chunk index")
        crc = zlib.crc32(raw[: _ENTROPY_TRAILER.size], zlib.crc32(head, self._crc_seed))
        (marker,) = _CHUNK_HEAD.unpack_from(head)
        if marker != 0 or crc != _CRC.unpack_from(raw, _ENTROPY_TRAILER.size)[0]:
            if self.partial:
                return None
            problem = (
                "trailer CRC mismatch"
                if marker == 0
                else "no trailer (the file is truncated or was not closed)"
            )
            raise _error(src, marker_at if marker != 0 else fields_at, problem)
        self._check_lengths(fields_at, num_frames, num_samples, source_samples)
        dtype = f"<u{field.size}"
        sizes = np.frombuffer(head, dtype=dtype, offset=_CHUNK_HEAD.size).astype(np.int64).tolist()
        last = num_frames - (num_chunks - 1) * h.chunk_frames
        for i, chunk in enumerate(sizes):
            frames = last if i == num_chunks - 1 else h.chunk_frames
            if not _CHUNK_HEAD.size + field.size + _CRC.size <= chunk <= h.max_chunk_size(frames):
                at = marker_at + _CHUNK_HEAD.size + i * field.size
                raise _error(src, at, f"chunk index: chunk {i} of {chunk} bytes is out of bounds")
        if self._data_offset + sum(sizes) != marker_at:
            found = marker_at - self._data_offset
            problem = f"chunk index: {num_chunks} chunks of {sum(sizes)} bytes, found {found}"
            raise _error(src, marker_at, problem)
        return num_frames, num_samples, source_samples, sizes

    def _check_lengths(
        self, offset: int, num_frames: int, num_samples: int, source_samples: int | None
    ) -> None:
        """The trailer's lengths (``offset``: its frame count) against the header and each other."""
        h = self.header
        if h.num_samples is not None and num_samples != h.num_samples:
            raise _error(
                self._source, offset + 8, f"trailer says {num_samples} samples, header {h.num_samples}"
            )
        if num_samples > MAX_NUM_SAMPLES or not _samples_fit(h, num_frames, num_samples):
            raise _error(self._source, offset + 8, f"{num_samples} samples do not fit in {num_frames} frames")
        if source_samples is not None and (
            source_samples > MAX_NUM_SAMPLES or not _source_fits(h, num_samples, source_samples)
        ):
            problem = (
                f"{source_samples} source samples at {h.source_rate} Hz do not last as long as "
                f"{num_samples} samples at {h.sample_rate} Hz"
            )
            raise _error(self._source, offset + 16, problem)

    def _parse_trailer(self, offset: int) -> tuple[int, int, int | None] | None:
        """``(num_frames, num_samples, source_samples)`` of a valid trailer at ``offset`` (source samples
        ``None`` in version 1); ``None`` when it is not one (in partial mode, the writer may not have
        written it yet)."""
        h = self.header
        layout = _TRAILER if h.version == 1 else _TRAILER_V2
        raw = self._source.read(offset, layout.size + _CRC.size, "trailer")
        marker, num_frames, num_samples, *rest = layout.unpack_from(raw)
        source_samples = rest[0] if rest else None
        crc_ok = zlib.crc32(raw[: layout.size], self._crc_seed) == _CRC.unpack_from(raw, layout.size)[0]
        if marker != 0 or not crc_ok:
            if self.partial:
                return None
            problem = (
                "trailer CRC mismatch"
                if marker == 0
                else "no trailer (the file is truncated or was not closed)"
            )
            raise _error(self._source, offset, problem)
        self._check_lengths(offset + 2, num_frames, num_samples, source_samples)
        return num_frames, num_samples, source_samples

    @property
    def bytes_read(self) -> int:
        """Bytes read from the source so far."""
        return self._source.bytes_read

    @property
    def reads(self) -> int:
        """Read calls made on the source so far."""
        return self._source.reads

    def close(self) -> None:
        """Close the underlying file."""
        self._source.close()

    def __enter__(self) -> AkcReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chunks ---------------------------------------------------------------------------------
    def chunk_offset(self, index: int) -> int:
        """Byte offset of chunk ``index``."""
        if self.header.entropy_coded:
            return self._chunk_starts[index]
        return self._data_offset + index * self.header.chunk_stride

    def _chunk_frames(self, index: int) -> int:
        """Frames of chunk ``index``: ``chunk_frames``, fewer in the last chunk of a complete file."""
        last = self.complete and index == self.num_chunks - 1
        return self.num_frames - index * self.header.chunk_frames if last else self.header.chunk_frames

    def _check_chunk(self, raw: bytes, index: int, offset: int, frames: int) -> None:
        """BitstreamError unless chunk ``index`` (its bytes ``raw``, at ``offset``) has its CRC, declares
        ``frames`` frames and (version 3) a payload size that fills the size its index entry gives."""
        (declared,) = _CHUNK_HEAD.unpack_from(raw)
        crc = zlib.crc32(raw[:-4], zlib.crc32(struct.pack("<Q", index), self._crc_seed))
        if crc != _CRC.unpack_from(raw, len(raw) - 4)[0]:
            raise _error(self._source, offset, f"chunk {index} CRC mismatch (corrupt data)")
        if declared != frames:
            raise _error(self._source, offset, f"chunk {index} holds {declared} frames, expected {frames}")
        if self.header.entropy_coded:
            field = self.header.size_field
            (payload_size,) = field.unpack_from(raw, _CHUNK_HEAD.size)
            if _CHUNK_HEAD.size + field.size + payload_size + _CRC.size != len(raw):
                problem = f"chunk {index}: payload size {payload_size} disagrees with the index"
                raise _error(self._source, offset + 2, problem)

    def verify(self) -> None:
        """Check every chunk available now as reading it does (fixed-width codes: CRC, frame count, padding
        bits, code range) but, in version 3, without decoding its codes (CRC, frame count, payload size; so
        also without its entropy model): :class:`BitstreamError` naming the byte offset of the first
        damaged one."""
        for index in range(self.num_chunks):
            if not self.header.entropy_coded:
                self.read_chunk(index)
                continue
            offset = self.chunk_offset(index)
            raw = self._source.read(offset, self._chunk_sizes[index], f"chunk {index}")
            self._check_chunk(raw, index, offset, self._chunk_frames(index))

    def read_chunk(self, index: int) -> torch.Tensor:
        """Codes ``[channels, num_codebooks, frames]`` int64 of chunk ``index`` (CRC-checked)."""
        h, src = self.header, self._source
        if not 0 <= index < self.num_chunks:
            raise IndexError(f"chunk {index} not in 0..{self.num_chunks - 1}")
        frames, offset = self._chunk_frames(index), self.chunk_offset(index)
        if h.entropy_coded:
            values = self._read_entropy_chunk(index, offset, frames)
            return torch.from_numpy(values.transpose(1, 2, 0).copy())
        payload_size = h.payload_size(frames)
        raw = src.read(offset, CHUNK_OVERHEAD + payload_size, f"chunk {index}")
        self._check_chunk(raw, index, offset, frames)
        count = frames * h.channels * h.num_codebooks
        values, padding_zero = unpack_codes(memoryview(raw)[2:-4], count, h.codebook_bits)
        if not padding_zero:
            raise _error(src, offset + 1 + payload_size, f"chunk {index} has non-zero padding bits")
        bad = np.flatnonzero(values >= h.codebook_size)
        if bad.size:
            at = offset + 2 + int(bad[0]) * h.codebook_bits // 8
            raise _error(src, at, f"code {int(values[bad[0]])} >= codebook size {h.codebook_size}")
        return torch.from_numpy(values.reshape(frames, h.channels, h.num_codebooks).transpose(1, 2, 0).copy())

    def _read_entropy_chunk(self, index: int, offset: int, frames: int) -> np.ndarray:
        """Codes ``[frames, channels, num_codebooks]`` of the version-3 chunk ``index`` at ``offset``."""
        h, src = self.header, self._source
        raw = src.read(offset, self._chunk_sizes[index], f"chunk {index}")
        self._check_chunk(raw, index, offset, frames)
        head_size = _CHUNK_HEAD.size + h.size_field.size
        model = self._entropy_model()
        try:
            return model.decode(memoryview(raw)[head_size:-4], frames, h.channels, h.num_codebooks)
        except EntropyDecodeError as exc:
            at = offset + head_size + exc.position
            raise _error(src, at, f"chunk {index}: {exc.problem}") from None

    def _entropy_model(self) -> EntropyCoder:
        """The tables of a version-3 file (found for its weights on first use), checked against its id."""
        h = self.header
        if self._entropy is None:
            from audiokit.coding import entropy_model_for  # the weights registry needs the models

            self._entropy = entropy_model_for(h.model_name, h.weights_hash, h.entropy_model)
        model = self._entropy
        if model.model_id != h.entropy_model or not model.fits(h.num_codebooks, h.codebook_size):
            raise BitstreamError(
                f"{self._source.name}: byte {_FIELD_OFFSETS['model_name']}: entropy-coded with tables "
                f"{h.entropy_model:08x} for {h.num_codebooks} x {h.codebook_size} codes, but the tables at "
                f"hand are {model.model_id:08x} ({model.num_tables} x {model.codebook_size})"
            )
        return model

    def iter_chunks(self, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_frame, codes [C, n_q, frames])`` for chunks ``start..`` available now."""
        for index in range(start, self.num_chunks):
            yield index * self.header.chunk_frames, self.read_chunk(index)

    def read_frames(self, start: int, stop: int) -> torch.Tensor:
        """Codes ``[C, n_q, stop - start]`` of frames ``[start, stop)``, reading only their chunks."""
        h = self.header
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frames [{start}, {stop}) not within [0, {self.num_frames})")
        if start == stop:
            return torch.zeros(h.channels, h.num_codebooks, 0, dtype=torch.int64)
        first, last = start // h.chunk_frames, (stop - 1) // h.chunk_frames
        codes = torch.cat([self.read_chunk(i) for i in range(first, last + 1)], dim=2)
        skip = start - first * h.chunk_frames
        return codes[:, :, skip : skip + stop - start]

    def frame_range(self, start_s: float | None = None, duration_s: float | None = None) -> tuple[int, int]:
        """Frames ``[first, stop)`` covering ``start_s`` seconds on for ``duration_s`` seconds (to the
        end when ``None``); :class:`UsageError` when the range is empty or starts past the end."""
        if start_s is None and duration_s is None:
            return 0, self.num_frames
        start_s = 0.0 if start_s is None else start_s
        if not math.isfinite(start_s) or start_s < 0:
            raise UsageError(f"{self._source.name}: start {start_s} s must be a time >= 0")
        if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
            raise UsageError(f"{self._source.name}: duration {duration_s} s must be > 0")
        rate = self.header.frame_rate
        first = math.floor(Fraction(start_s) * rate)
        if first >= self.num_frames:
            total = float(self.num_frames / rate)
            raise UsageError(
                f"{self._source.name}: start {start_s} s is past the end of the stream ({total:.3f} s)"
            )
        stop = self.num_frames if duration_s is None else math.ceil(Fraction(start_s + duration_s) * rate)
        return first, min(stop, self.num_frames)


def read_akc(
    path: str | os.PathLike, start_s: float | None = None, duration_s: float | None = None
) -> tuple[AkcHeader, torch.Tensor, int]:
    """Read a complete ``.akc`` file: ``(header, codes [C, n_q, frames] int64, first_frame)``.

    With ``start_s``/``duration_s`` only the chunks covering that time range are read;
    ``first_frame`` is the index of the first returned frame in the whole stream.
    """
    with AkcReader(path) as reader:
        first, stop = reader.frame_range(start_s, duration_s)
        return reader.header, reader.read_frames(first, stop), first


class AkcWriter:
    """Streaming ``.akc`` writer: :meth:`append` codes as they come, :meth:`close` to finish.

    Each complete chunk is written and flushed as soon as its frames are appended, so an
    ``AkcReader(path, partial=True)`` can read the file while it grows. ``target`` is a path (the
    file is created or overwritten in place; use :func:`write_akc` for an atomic write) or a binary
    file object (left open). A version-3 ``header`` (``entropy_model`` set) needs the ``entropy`` model
    with that id.
    """

    def __init__(
        self, target: str | os.PathLike | BinaryIO, header: AkcHeader, entropy: EntropyCoder | None = None
    ) -> None:
        if header.entropy_coded and (
            entropy is None
            or entropy.model_id != header.entropy_model
            or not entropy.fits(header.num_codebooks, header.codebook_size)
        ):
            raise ValueError(
                f"the header asks for entropy model {header.entropy_model:08x} for {header.num_codebooks} x "
                f"{header.codebook_size} codes; pass that model as entropy="
            )
        self.header = header
        self._entropy = entropy if header.entropy_coded else None
        self._chunk_sizes: list[int] = []
        self._owns_file = not hasattr(target, "write")
        self._file: BinaryIO = open(target, "wb") if self._owns_file else target  # noqa: SIM115
        self._crc_seed = zlib.crc32(header.encode()[:-4])
        self._pending = np.zeros((0, header.channels, header.num_codebooks), dtype=np.int64)
        self._chunks = 0
        self.num_frames = 0
        self.closed = False
        self._write(header.encode())

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def _chunk_bytes(self, frames: np.ndarray) -> bytes:
        if self._entropy is None:
            body = _CHUNK_HEAD.pack(frames.shape[0]) + pack_codes(
                frames.reshape(-1), self.header.codebook_bits
            )
        else:
            payload = self._entropy.encode(frames)
            body = _CHUNK_HEAD.pack(frames.shape[0]) + self.header.size_field.pack(len(payload)) + payload
        crc = zlib.crc32(body, zlib.crc32(struct.pack("<Q", self._chunks), self._crc_seed))
        self._chunks += 1
        self._chunk_sizes.append(len(body) + _CRC.size)
        return body + _CRC.pack(crc)

    def append(self, codes: torch.Tensor | np.ndarray) -> None:
        """Add codes ``[channels, num_codebooks, frames]`` (ints in ``[0, codebook_size)``)."""
        if self.closed:
            raise ValueError("append() on a closed AkcWriter")
        h = self.header
        array = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if array.ndim != 3 or array.shape[:2] != (h.channels, h.num_codebooks):
            raise ValueError(f"codes must be [{h.channels}, {h.num_codebooks}, frames], got {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"codes must be integers, got {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= h.codebook_size):
            raise ValueError(f"codes must be in [0, {h.codebook_size}), got [{array.min()}, {array.max()}]")
        pending = np.concatenate([self._pending, array.transpose(2, 0, 1).astype(np.int64)])
        full = pending.shape[0] // h.chunk_frames * h.chunk_frames
        if full:
            out = b"".join(
                self._chunk_bytes(pending[i : i + h.chunk_frames]) for i in range(0, full, h.chunk_frames)
            )
            self._write(out)
        self._pending = pending[full:]
        self.num_frames += array.shape[2]

    def close(self, num_samples: int | None = None, source_samples: int | None = None) -> None:
        """Write the last (partial) chunk and the trailer. ``num_samples`` (the exact audio length) is
        required here unless the header has it, and must agree with it when both are given.
        ``source_samples`` (version 2: the length before resampling) likewise, when the header has a
        ``source_rate``."""
        if self.closed:
            return
        h = self.header
        num_samples = h.num_samples if num_samples is None else num_samples
        if num_samples is None:
            raise ValueError("close() needs num_samples: the header does not give the audio length")
        if h.num_samples is not None and num_samples != h.num_samples:
            raise ValueError(f"num_samples {num_samples} disagrees with the header's {h.num_samples}")
        if not 0 <= num_samples <= MAX_NUM_SAMPLES or not _samples_fit(h, self.num_frames, num_samples):
            raise ValueError(f"{num_samples} samples do not fit in the {self.num_frames} frames written")
        if h.version >= 2:
            source_samples = h.source_samples if source_samples is None else source_samples
            if source_samples is None:
                raise ValueError("close() needs source_samples: the header has a source_rate but no length")
            if h.source_samples is not None and source_samples != h.source_samples:
                raise ValueError(
                    f"source_samples {source_samples} disagrees with the header's {h.source_samples}"
                )
            if not 0 <= source_samples <= MAX_NUM_SAMPLES or not _source_fits(h, num_samples, source_samples):
                raise ValueError(
                    f"{source_samples} samples at {h.source_rate} Hz do not last as long as {num_samples} "
                    f"samples at {h.sample_rate} Hz"
                )
        tail = self._chunk_bytes(self._pending) if self._pending.shape[0] else b""
        if h.version == 1:
            trailer = _TRAILER.pack(0, self.num_frames, num_samples)
        elif h.version == 2:
            trailer = _TRAILER_V2.pack(0, self.num_frames, num_samples, source_samples)
        else:
            index = np.asarray(self._chunk_sizes, dtype=f"<u{h.size_field.size}").tobytes()
            trailer = (
                _CHUNK_HEAD.pack(0)
                + index
                + _ENTROPY_TRAILER.pack(self.num_frames, num_samples, source_samples)
            )
        self._write(tail + trailer + _CRC.pack(zlib.crc32(trailer, self._crc_seed)))
        self.closed = True
        if self._owns_file:
            os.fsync(self._file.fileno())
            self._file.close()

    def abort(self) -> None:
        """Stop without a trailer (readers will report the file as truncated)."""
        self.closed = True
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> AkcWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_akc(
    path: str | os.PathLike,
    codes: torch.Tensor | np.ndarray,
    header: AkcHeader,
    entropy: EntropyCoder | None = None,
) -> None:
    """Write codes ``[channels, num_codebooks, frames]`` to ``path`` atomically (temporary file + rename).

    ``header.num_samples`` must be set; ``entropy``: the tables of a version-3 header.
    """
    if header.num_samples is None:
        raise ValueError("write_akc needs header.num_samples (the exact audio length)")
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        writer = AkcWriter(file, header, entropy)
        writer.append(codes)
        writer.close()
        os.fsync(file.fileno())
