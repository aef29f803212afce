"""Deterministic entropy coding of codec codes: static per-codebook frequency tables and an integer
range coder.

Everything here is integer arithmetic on Python ints (no floats, no platform-dependent rounding), so a
payload is the same bytes on every machine, whichever device computed the codes. The coder is the
LZMA range coder (32-bit range, renormalised below ``2**24``, carry propagated through a cached byte)
with the always-zero first output byte dropped and a shortest flush: the encoder ends on the value in
its final interval with the most trailing zero bytes and leaves those out; the decoder reads zeros
past the end. Two probability models drive it: :class:`EntropyModel` here, one static frequency table
per codebook (stage), ``frequencies[q][code] >= 1`` summing to ``2**precision``, counted on speech by
:meth:`EntropyModel.from_counts`; and the learned causal prior of :mod:`audiokit.entropy_model`, whose
tables change from code to code (:class:`RangeEncoder` / :class:`RangeDecoder`). See
``docs/bitstream.md`` ("Entropy-coded chunks").
"""

from __future__ import annotations

import json
import struct
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from audiokit.io import atomic_path

FORMAT = "audiokit-entropy"
MIN_PRECISION, MAX_PRECISION = 8, 16
_TOP = 1 << 24
_MASK = 0xFFFFFFFF
_CODE_BYTES = 4  # bytes of the decoder's code value


class EntropyDecodeError(ValueError):
    """A payload that no encoder wrote; ``position`` is the byte offset in the payload."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(problem)
        self.position = position
        self.problem = problem


def outside_code_range(position: int) -> EntropyDecodeError:
    """The error of a decoded value past ``2**precision`` (``position``: the byte read last)."""
    return EntropyDecodeError(position, "entropy-coded value outside the code range")


def bytes_after_last_code(position: int, size: int) -> EntropyDecodeError:
    """The error of a ``size``-byte payload with bytes left from ``position`` after its last code."""
    return EntropyDecodeError(position, f"{size - position} byte(s) after the last entropy-coded code")


def max_payload_size(count: int) -> int:
    """Upper bound (bytes) of the payload of ``count`` codes: at most 16 bits a code, plus the flush."""
    return 2 * count + _CODE_BYTES


class _RangeEncoder:
    """LZMA range encoder state: ``low`` (33 bits with the carry), ``range`` (32 bits), and the last
    byte shifted out (``cache``) with the ``0xFF`` bytes after it, held back until no carry can reach
    them."""

    def __init__(self) -> None:
        self.low, self.range, self.cache, self.cache_size = 0, _MASK, 0, 1
        self.out = bytearray()

    def finish(self) -> bytes:
        """The payload: the shortest value in ``[low, low + range)`` flushed, first and trailing zero
        bytes left out."""
        for kept in range(_CODE_BYTES + 1):
            mask = (1 << (8 * (_CODE_BYTES - kept))) - 1
            value = (self.low + mask) & ~mask
            if value < self.low + self.range:
                break
        self.low = value
        for _ in range(kept + 1):
            self.shift_low()
        return bytes(self.out[1:]).rstrip(b"\0")  # the first byte is always 0

    def shift_low(self) -> None:
        """Move the top byte of ``low`` out, propagating a carry into the held-back bytes."""
        if self.low < 0xFF000000 or self.low > _MASK:
            carry = self.low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            self.out.extend([(0xFF + carry) & 0xFF] * (self.cache_size - 1))
            self.cache_size = 0
            self.cache = (self.low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (self.low << 8) & _MASK

    def encode(self, start: int, size: int, precision: int) -> None:
        """Code the symbol of cumulative ``start`` and frequency ``size`` of a table summing to
        ``2**precision``."""
        r = self.range >> precision
        self.low += r * start
        self.range = r * size
        while self.range < _TOP:
            self.range <<= 8
            self.shift_low()


RangeEncoder = _RangeEncoder


class RangeDecoder:
    """The decoder of :class:`RangeEncoder` for models whose table changes from code to code: ``decode``
    each code with its table's cumulative ends, then ``finish``. ``count``: codes in the payload (bounds
    the zeros read past its end)."""

    def __init__(self, payload: bytes | memoryview, count: int) -> None:
        self.size = len(payload)
        if self.size and payload[-1] == 0:
            raise EntropyDecodeError(self.size - 1, "entropy-coded payload ends in a zero byte")
        self.data = bytes(payload) + bytes(_CODE_BYTES + 2 * count)  # zeros past the end
        self.code = int.from_bytes(self.data[:_CODE_BYTES], "big")
        self.pos, self.range = _CODE_BYTES, _MASK

    def decode(self, ends: np.ndarray, precision: int) -> int:
        """The next symbol, of a table given by its cumulative ends (``ends[x]`` = frequencies of codes
        ``0..x`` summed; the last is ``2**precision``)."""
        r = self.range >> precision
        value = self.code // r
        if value >= 1 << precision:
            raise outside_code_range(self.pos - 1)
        symbol = int(np.searchsorted(ends, value, side="right"))
        start = int(ends[symbol - 1]) if symbol else 0
        self.code -= r * start
        self.range = r * (int(ends[symbol]) - start)
        while self.range < _TOP:
            self.code = ((self.code << 8) | self.data[self.pos]) & _MASK
            self.pos += 1
            self.range <<= 8
        return symbol

    def finish(self) -> None:
        """Raise :class:`EntropyDecodeError` when bytes are left after the last code."""
        if self.pos < self.size:
            raise bytes_after_last_code(self.pos, self.size)


class EntropyCoder(Protocol):
    """What the ``.akc`` reader and writer need of a probability model: :class:`EntropyModel` (static
    tables) or :class:`audiokit.entropy_model.PriorModel` (the learned causal prior)."""

    @property
    def model_id(self) -> int: ...

    @property
    def num_tables(self) -> int: ...

    @property
    def codebook_size(self) -> int: ...

    def fits(self, num_codebooks: int, codebook_size: int) -> bool: ...

    def encode(self, codes: np.ndarray) -> bytes: ...

    def decode(self, payload: bytes | memoryview, frames: int, channels: int, n_q: int) -> np.ndarray: ...


@dataclass(frozen=True)
class EntropyModel:
    """Static per-codebook probability model.

    ``frequencies``: one table per codebook (stage), ``codebook_size`` ints ``>= 1`` each, summing to
    ``2**precision``; a stream of ``n_q`` codebooks uses the first ``n_q`` tables. ``meta``: free-form
    description (what the counts came from); not part of :attr:`model_id`.
    """

    precision: int
    frequencies: tuple[tuple[int, ...], ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not MIN_PRECISION <= self.precision <= MAX_PRECISION:
            raise ValueError(
                f"precision must be in {MIN_PRECISION}..{MAX_PRECISION} bits, got {self.precision}"
            )
        if not self.frequencies or len({len(t) for t in self.frequencies}) != 1:
            raise ValueError("frequencies must be one or more tables of equal size")
        for q, table in enumerate(self.frequencies):
            if min(table) < 1 or sum(table) != 1 << self.precision:
                raise ValueError(f"table {q}: frequencies must be >= 1 and sum to 2**{self.precision}")
        cumulative = []
        for table in self.frequencies:
            starts = [0]
            for f in table:
                starts.append(starts[-1] + f)
            cumulative.append(starts)
        object.__setattr__(self, "_cumulative", cumulative)

    @property
    def num_tables(self) -> int:
        """Codebooks (stages) the model covers."""
        return len(self.frequencies)

    @property
    def codebook_size(self) -> int:
        """Symbols per table."""
        return len(self.frequencies[0])

    @property
    def model_id(self) -> int:
        """CRC32 of the tables (precision, table count and size, frequencies as u32 LE): what an ``.akc``
        header records, so a decoder can tell that it holds the encoder's tables."""
        head = struct.pack("<III", self.precision, self.num_tables, self.codebook_size)
        body = np.asarray(self.frequencies, dtype="<u4").tobytes()
        return zlib.crc32(body, zlib.crc32(head))

    @classmethod
    def from_counts(cls, counts: np.ndarray, precision: int = 15, meta: dict | None = None) -> EntropyModel:
        """Tables from integer code counts ``[num_tables, codebook_size]``: every code gets 1, the rest of
        ``2**precision`` is shared in proportion to the counts (floor), and what flooring leaves goes one
        each to the largest remainders (lowest code first on ties). Integer arithmetic only."""
        counts = np.asarray(counts)
        if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
            raise ValueError("counts must be non-negative integers [num_tables, codebook_size]")
        total = 1 << precision
        size = counts.shape[1]
        if size > total:
            raise ValueError(f"{size} codes do not fit in 2**{precision}")
        tables = []
        for row in counts.tolist():
            n = sum(row)
            spare = total - size
            if n == 0:
                shares, remainders = [spare // size] * size, [0] * size
                leftover = spare - sum(shares)
            else:
                shares = [c * spare // n for c in row]
                remainders = [c * spare % n for c in row]
                leftover = spare - sum(shares)
            order = sorted(range(size), key=lambda i: (-remainders[i], i))
            for i in order[:leftover]:
                shares[i] += 1
            tables.append(tuple(1 + s for s in shares))
        return cls(precision, tuple(tables), dict(meta or {}))

    # -- coding -----------------------------------------------------------------------------------
    def encode(self, codes: np.ndarray) -> bytes:
        """Payload of ``codes [frames, channels, n_q]`` (ints in ``[0, codebook_size)``), coded frame by
        frame, then channel by channel, then codebook by codebook, codebook ``q`` with table ``q``."""
        frames, channels, n_q = codes.shape
        self._check_shape(n_q)
        cumulative, shift = self._cumulative[:n_q], self.precision
        coder = _RangeEncoder()
        for row in codes.reshape(-1, n_q).tolist():
            for starts, code in zip(cumulative, row, strict=True):
                r = coder.range >> shift
                start = starts[code]
                coder.low += r * start
                coder.range = r * (starts[code + 1] - start)
                while coder.range < _TOP:
                    coder.range <<= 8
                    coder.shift_low()
        return coder.finish()

    def decode(self, payload: bytes | memoryview, frames: int, channels: int, n_q: int) -> np.ndarray:
        """Codes ``[frames, channels, n_q]`` int64 of a payload that :meth:`encode` wrote; an
        :class:`EntropyDecodeError` (naming the payload byte) when it ends in a zero byte (which the
        encoder leaves out), finds a value no code maps to, or leaves bytes unread."""
        self._check_shape(n_q)
        size = len(payload)
        if size and payload[-1] == 0:
            raise EntropyDecodeError(size - 1, "entropy-coded payload ends in a zero byte")
        data = bytes(payload) + bytes(_CODE_BYTES + 2 * frames * channels * n_q)  # zeros past the end
        cumulative, shift = self._cumulative[:n_q], self.precision
        limit = 1 << shift
        code_value = int.from_bytes(data[:_CODE_BYTES], "big")
        pos, rng = _CODE_BYTES, _MASK
        out = []
        for _ in range(frames * channels):
            for starts in cumulative:
                r = rng >> shift
                value = code_value // r
                if value >= limit:
                    raise EntropyDecodeError(pos - 1, "entropy-coded value outside the code range")
                code = bisect_right(starts, value) - 1
                start = starts[code]
                code_value -= r * start
                rng = r * (starts[code + 1] - start)
                while rng < _TOP:
                    code_value = ((code_value << 8) | data[pos]) & _MASK
                    pos += 1
                    rng <<= 8
                out.append(code)
        if pos < size:
            raise EntropyDecodeError(pos, f"{size - pos} byte(s) after the last entropy-coded code")
        return np.asarray(out, dtype=np.int64).reshape(frames, channels, n_q)

    def _check_shape(self, n_q: int) -> None:
        if not 1 <= n_q <= self.num_tables:
            raise ValueError(f"{n_q} codebooks, but the entropy model has tables for 1..{self.num_tables}")

    def fits(self, num_codebooks: int, codebook_size: int) -> bool:
        """Whether the model codes streams of ``num_codebooks`` codebooks of ``codebook_size`` entries."""
        return 1 <= num_codebooks <= self.num_tables and codebook_size == self.codebook_size

    def bits_per_code(self, q: int) -> float:
        """Entropy (bits) of table ``q``: what a code of codebook ``q`` costs on average if the codes
        follow the table (a report figure, not used by the coder)."""
        total = 1 << self.precision
        freqs = np.asarray(self.frequencies[q], dtype=np.float64)
        return float(-(freqs / total * np.log2(freqs / total)).sum())

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomically)."""
        path = Path(path)
        record = {
            "format": FORMAT,
            "model_id": self.model_id,
            "precision": self.precision,
            "meta": self.meta,
            "frequencies": [list(t) for t in self.frequencies],
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> EntropyModel:
        """Read a model :meth:`save` wrote; ``ValueError`` when it is not one or its id does not match."""
        record = json.loads(Path(path).read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"{path}: not an {FORMAT} file")
        model = cls(
            int(record["precision"]),
            tuple(tuple(int(f) for f in t) for t in record["frequencies"]),
            record.get("meta", {}),
        )
        if model.model_id != record.get("model_id"):
            raise ValueError(f"{path}: model_id {record.get('model_id')} does not match its tables")
        return model


def count_codes(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Counts ``[n_q, codebook_size]`` int64 of codes ``[..., n_q, frames]`` per codebook."""
    n_q = codes.shape[-2]
    flat = np.moveaxis(codes, -2, 0).reshape(n_q, -1)
    return np.stack([np.bincount(row, minlength=codebook_size) for row in flat]).astype(np.int64)
