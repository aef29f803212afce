"""Fuzzing the .akc parser: every mutation of a valid file (versions 1 to 3; version 3: chunks
entropy-coded with static tables or with a causal prior, and the chunk index with u16 and u32 entries)
either parses or raises BitstreamError.

Mutations run on in-memory bytes through :class:`AkcReader`, the parser the file API uses. A parse
that succeeds must return the original codes unless the mutation rewrote CRCs (then any output must
at least be self-consistent). Allocation is bounded: the peak traced memory of a parse stays within
a small multiple of the input size. Time is bounded in CPU seconds (the process's, and the thread's
per parse), never wall-clock: a busy CI machine slows the wall clock, not the CPU time a parse needs.
"""

from __future__ import annotations

import signal
import struct
import time
import tracemalloc
import zlib
from contextlib import contextmanager
from fractions import Fraction

import numpy as np
import pytest
import torch

from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter
from audiokit.entropy import EntropyModel
from audiokit.errors import BitstreamError
from tests.test_entropy_prior import _toy_prior

HEADER_FIELDS = [  # (offset, struct format) of the fixed header fields, from docs/bitstream.md
    (4, "<H"),
    (6, "<H"),
    (8, "<I"),
    (12, "<H"),
    (14, "<B"),
    (15, "<B"),
    (16, "<I"),
    (20, "<I"),
    (24, "<I"),
    (28, "<H"),
    (30, "<Q"),
    (38, "<B"),
]


# skewed tables for 3 codebooks of 1000 codes: the fuzzed file's codes cost more or less than 10 bits
ENTROPY = EntropyModel.from_counts(np.random.default_rng(7).integers(0, 50, (3, 1000)) ** 2)
PRIOR = _toy_prior(size=1000, stages=3, width=16)  # the other probability model of version 3
# 64 x 64 one-bit codes in 8-frame chunks: a version-3 chunk may exceed 65535 bytes, so u32 size fields
WIDE = EntropyModel.from_counts(np.tile([[1, 20]], (64, 1)), precision=8)


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data.extend(chunk)

    def flush(self) -> None:
        pass


def _valid_file(version: int = 1, entropy=ENTROPY) -> tuple[bytes, torch.Tensor]:
    source = {"source_rate": 44100, "source_samples": 114_641} if version >= 2 else {}
    if version == 3:
        source["entropy_model"] = entropy.model_id
    if entropy is WIDE:  # 17 frames: chunks of 8, 8 and 1 frames
        source["source_samples"] = 17 * 2000 * 44100 // 16000
        header = AkcHeader("fuzz", "beef", 16000, 64, 64, 2, Fraction(8), num_samples=17 * 2000, **source)
        codes = torch.randint(0, 2, (64, 64, 17), generator=torch.Generator().manual_seed(0))
    else:
        header = AkcHeader("fuzz", "beef", 16000, 2, 3, 1000, Fraction(50), num_samples=41_593, **source)
        codes = torch.randint(0, 1000, (2, 3, 130), generator=torch.Generator().manual_seed(0))
    sink = _Sink()
    with AkcWriter(sink, header, entropy) as writer:
        writer.append(codes)
    return bytes(sink.data), codes


def _layout(data: bytes) -> tuple[int, int, list[tuple[int, int]], int, int]:
    """(header CRC seed, header size, [(offset, size) of each chunk], trailer size, bytes from the trailer's
    frame count to the end) of an unmutated file."""
    header_size = struct.unpack_from("<H", data, 6)[0]
    seed = zlib.crc32(data[: header_size - 4])
    version = struct.unpack_from("<H", data, 4)[0]
    if version == 3:  # 3 chunks: their sizes (u16, or u32 if a chunk may not fit) before the three u64 counts
        channels, codebooks, chunk_frames = data[12], data[14], struct.unpack_from("<H", data, 28)[0]
        wide = 2 + 4 + 2 * chunk_frames * channels * codebooks + 4 + 4 > 0xFFFF
        field = "I" if wide else "H"
        sizes = struct.unpack_from("<" + 3 * field, data, len(data) - 28 - 3 * struct.calcsize(field))
        offsets = np.cumsum([header_size, *sizes[:-1]]).tolist()
        return seed, header_size, list(zip(offsets, sizes, strict=True)), 2 + 3 * (4 if wide else 2) + 28, 28
    trailer = 22 if version == 1 else 30
    stride = 6 + (50 * 2 * 3 * 10 + 7) // 8
    chunks, pos = [], header_size
    while pos + stride <= len(data) - trailer:
        chunks.append((pos, stride))
        pos += stride
    chunks.append((pos, len(data) - trailer - pos))
    return seed, header_size, chunks, trailer, trailer - 2


def _fix_header_crc(b: bytearray) -> None:
    size = struct.unpack_from("<H", b, 6)[0]
    if 8 <= size <= len(b):
        b[size - 4 : size] = struct.pack("<I", zlib.crc32(bytes(b[: size - 4])))


def _pick(rng: np.random.Generator, choices: list[int]) -> int:
    """One of ``choices`` (Python ints: no conversion to a numpy dtype that could overflow)."""
    return choices[int(rng.integers(len(choices)))]


def _mutate(data: bytes, rng: np.random.Generator, layout) -> tuple[bytes, bool]:
    """One deterministic mutation; returns (mutated bytes, whether CRCs were recomputed)."""
    seed, header_size, chunks, trailer, counts_end = layout
    b = bytearray(data)
    kind = int(rng.integers(12))
    n = len(b)
    if kind == 0:  # bit flips
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(n))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # byte sets
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(n))] = _pick(rng, [0, 0xFF, int(rng.integers(256))])
    elif kind == 2:  # truncation
        del b[int(rng.integers(n)) :]
    elif kind == 3:  # insertion
        i = int(rng.integers(n + 1))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == 4:  # deletion
        i = int(rng.integers(n))
        del b[i : i + int(rng.integers(1, 40))]
    elif kind == 5:  # header field overflow with a valid header CRC
        offset, fmt = HEADER_FIELDS[int(rng.integers(len(HEADER_FIELDS)))]
        width = struct.calcsize(fmt)
        top = (1 << (8 * width)) - 1
        value = _pick(rng, [0, 1, 2, top, top - 1, int(rng.integers(0, min(top, 1 << 62)))])
        struct.pack_into(fmt, b, offset, value)
        _fix_header_crc(b)
        return bytes(b), True
    elif kind == 6:  # trailer with huge or inconsistent counts and a valid trailer CRC
        counts = list(struct.unpack_from("<" + "Q" * ((counts_end - 4) // 8), b, n - counts_end))
        choices = [
            0,
            1,
            counts[0] - 1,
            counts[0] + 1,
            (1 << 64) - 1,
            1 << 40,
            counts[1] + 1,
            counts[1] * 1000,
        ]
        counts = [_pick(rng, choices) % (1 << 64) if rng.random() < 0.6 else c for c in counts]
        struct.pack_into("<H", b, n - trailer, _pick(rng, [0, 0, 1, 0xFFFF]))
        struct.pack_into("<" + "Q" * len(counts), b, n - counts_end, *counts)
        struct.pack_into("<I", b, n - 4, zlib.crc32(bytes(b[n - trailer : n - 4]), seed))
        return bytes(b), True
    elif kind == 7:  # chunk frame count or payload rewritten, chunk CRC recomputed
        index = int(rng.integers(len(chunks)))
        offset, size = chunks[index]
        if rng.random() < 0.5:
            struct.pack_into("<H", b, offset, _pick(rng, [0, 1, 49, 51, 0xFFFF]))
        else:
            i = offset + 2 + int(rng.integers(size - 6))
            b[i] = int(rng.integers(256))
        crc = zlib.crc32(bytes(b[offset : offset + size - 4]), zlib.crc32(struct.pack("<Q", index), seed))
        struct.pack_into("<I", b, offset + size - 4, crc)
        return bytes(b), True
    elif kind == 8:  # chunks swapped or duplicated
        (o1, s1), (o2, s2) = chunks[0], chunks[1]
        first, second = bytes(b[o1 : o1 + s1]), bytes(b[o2 : o2 + s2])
        b[o1 : o2 + s2] = (second + first) if rng.random() < 0.5 else (first + first)
    elif kind == 9:  # garbage appended
        b.extend(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
    elif kind == 10:  # string lengths changed, header CRC recomputed
        b[38 + _pick(rng, [0, 5])] = int(rng.integers(256))
        _fix_header_crc(b)
        return bytes(b), True
    else:  # random bytes of random length, sometimes with a valid prefix
        keep = int(rng.integers(0, header_size + 1)) if rng.random() < 0.5 else 0
        b = b[:keep] + bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    return bytes(b), False


def _parse(data: bytes, partial: bool, entropy=ENTROPY) -> tuple[AkcHeader, torch.Tensor]:
    reader = AkcReader(data, partial=partial, entropy=entropy)
    return reader.header, reader.read_frames(0, reader.num_frames)


@contextmanager
def _cpu_deadline(seconds: float):
    """Fail instead of hanging once the process has used ``seconds`` of CPU time (SIGPROF, which other
    processes' load cannot trigger; a no-op where it does not exist)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(*_):
        raise TimeoutError(f"fuzz run used more than {seconds} CPU seconds: the parser hangs")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _fuzz(count: int, seed: int, cpu_limit_s: float, version: int = 1, entropy=ENTROPY) -> dict[str, int]:
    data, codes = _valid_file(version, entropy)
    header, parsed = _parse(data, partial=False, entropy=entropy)
    assert torch.equal(parsed, codes)
    layout = _layout(data)
    rng = np.random.default_rng(seed)
    outcomes = {"error": 0, "same": 0, "rewritten": 0}
    slowest = 0.0
    with _cpu_deadline(cpu_limit_s):
        for i in range(count):
            mutated, crcs_rewritten = _mutate(data, rng, layout)
            partial = i % 4 == 3
            traced = i % 50 == 0
            if traced:
                tracemalloc.start()
            start = time.thread_time()
            try:
                got_header, got = _parse(mutated, partial, entropy)
            except BitstreamError as exc:
                assert " byte " in str(exc) and str(exc).startswith("<bytes>: byte "), str(exc)
                outcomes["error"] += 1
            else:
                if crcs_rewritten:
                    outcomes["rewritten"] += 1
                    h = got_header
                    assert got.shape == (h.channels, h.num_codebooks, got.shape[2])
                    assert got.numel() == 0 or (0 <= int(got.min()) and int(got.max()) < h.codebook_size)
                else:
                    assert torch.equal(got, codes[:, :, : got.shape[2]]), "garbage accepted"
                    assert partial or (got_header == header and got.shape == codes.shape)
                    outcomes["same"] += 1
            finally:
                slowest = max(slowest, time.thread_time() - start)
                if traced:
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                    assert peak < 64 * len(mutated) + (1 << 20), f"mutation {i}: {peak} bytes allocated"
    assert slowest < 2.0, f"one parse took {slowest:.2f} CPU seconds"  # a parse takes ~0.1 ms
    return outcomes


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fuzz_10k_mutations_only_raise_bitstream_errors(version):
    outcomes = _fuzz(10_000, seed=1234, cpu_limit_s=300, version=version)
    assert outcomes["error"] > 8_000, outcomes  # the mutations really break files


@pytest.mark.parametrize("entropy", [PRIOR, WIDE], ids=["prior", "u32_sizes"])
def test_fuzz_entropy_coded_kinds_only_raise_bitstream_errors(entropy):
    """Version 3 with the causal prior (its range decoder, C++ where the kernels build) and with u32
    chunk and index sizes."""
    count = 10_000 if entropy is PRIOR else 2_000  # a wide chunk holds 32,768 codes
    outcomes = _fuzz(count, seed=4321, cpu_limit_s=300, version=3, entropy=entropy)
    assert outcomes["error"] > 0.8 * count, outcomes


@pytest.mark.slow
def test_fuzz_100k_mutations_only_raise_bitstream_errors():
    outcomes = _fuzz(100_000, seed=98765, cpu_limit_s=3000)
    assert outcomes["error"] > 80_000, outcomes
