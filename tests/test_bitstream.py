"""audiokit.bitstream: round trips, bit packing against a naive packer, size, seeking, streaming, errors."""

from __future__ import annotations

import math
import re
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokit.bitstream import (
    AkcHeader,
    AkcReader,
    AkcWriter,
    pack_codes,
    read_akc,
    unpack_codes,
    write_akc,
)
from audiokit.coding import encode_file, load_codec
from audiokit.errors import BitstreamError, UsageError
from audiokit.models import Codes


def _header(**overrides) -> AkcHeader:
    fields = dict(
        model_name="speech-16k",
        weights_hash="0123456789abcdef" * 4,
        sample_rate=16000,
        channels=1,
        num_codebooks=12,
        codebook_size=1024,
        frame_rate=Fraction(16000, 320),
        num_samples=None,
    )
    fields.update(overrides)
    return AkcHeader(**fields)


def _codes(header: AkcHeader, frames: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (header.channels, header.num_codebooks, frames)
    return torch.randint(0, header.codebook_size, shape, generator=gen)


def _naive_pack(values: list[int], bits: int) -> bytes:
    """Reference packer: one big integer, MSB first, zero padded to whole bytes."""
    acc = 0
    for v in values:
        acc = (acc << bits) | v
    total = len(values) * bits
    pad = (-total) % 8
    return (acc << pad).to_bytes((total + pad) // 8, "big")


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_matches_naive_packer_and_unpacks(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=37)
    packed = pack_codes(values, bits)
    assert packed == _naive_pack(values.tolist(), bits)
    unpacked, padding_zero = unpack_codes(packed, values.size, bits)
    assert padding_zero and (unpacked == values).all()


def test_one_hour_of_codes_packs_and_unpacks_exactly():
    # speed is the benchmarks' business (a timed assertion fails on a loaded machine); size and values here
    values = np.random.default_rng(0).integers(0, 1024, size=3600 * 50 * 12)
    packed = pack_codes(values, 10)
    unpacked, _ = unpack_codes(packed, values.size, 10)
    assert len(packed) == 3600 * 50 * 12 * 10 // 8 and (unpacked == values).all()


@pytest.mark.parametrize(
    "overrides,frames",
    [
        ({}, 0),
        ({}, 1),
        ({}, 50),
        ({"channels": 2, "num_codebooks": 5, "codebook_size": 1000, "frame_rate": Fraction(24000, 320)}, 161),
        ({"codebook_size": 2, "num_codebooks": 1, "frame_rate": 86.1328125, "sample_rate": 44100}, 300),
        ({"codebook_size": 65536, "num_codebooks": 64, "channels": 3, "chunk_frames": 7}, 50),
    ],
)
def test_write_read_round_trip(tmp_path, overrides, frames):
    header = _header(**overrides)
    num_samples = int(frames * header.sample_rate / header.frame_rate)
    header = AkcHeader(**{**header.__dict__, "num_samples": num_samples})
    codes = _codes(header, frames)
    path = tmp_path / "x.akc"
    write_akc(path, codes, header)
    got_header, got, first = read_akc(path)
    assert got_header == header and first == 0
    assert got.dtype == torch.int64 and torch.equal(got, codes)
    assert [p.name for p in tmp_path.iterdir()] == ["x.akc"]  # no temporary file left behind


@pytest.mark.parametrize("seconds", [5, 10, 60])
def test_file_is_within_two_percent_of_nominal_bitrate(tmp_path, seconds):
    header = _header(num_samples=16000 * seconds)
    assert header.bitrate == 6000.0
    path = tmp_path / "x.akc"
    write_akc(path, _codes(header, 50 * seconds), header)
    header_bytes = 44 + len(header.model_name) + len(header.weights_hash)  # docs/bitstream.md layout
    nominal = 6000 * seconds / 8
    size = path.stat().st_size
    assert nominal + header_bytes <= size <= 1.02 * nominal + header_bytes, (size, nominal)


def test_seek_reads_only_the_needed_chunks(tmp_path):
    header = _header(num_samples=16000 * 60)
    codes = _codes(header, 3000)
    path = tmp_path / "x.akc"
    write_akc(path, codes, header)
    _, got, first = read_akc(path, start_s=30, duration_s=5)
    assert first == 1500 and torch.equal(got, codes[:, :, 1500:1750])
    _, got, first = read_akc(path, start_s=30.01, duration_s=0.04)  # frames 1500 (30.00 s) .. 1502 (30.04 s)
    assert first == 1500 and torch.equal(got, codes[:, :, 1500:1503])
    with AkcReader(path) as reader:
        opening = reader.bytes_read
        start, stop = reader.frame_range(30, 5)
        reader.read_frames(start, stop)
        chunk_bytes = reader.bytes_read - opening
        assert chunk_bytes == 5 * (6 + 750)  # five one-second chunks of 12 x 10-bit codes x 50 frames
        assert reader.bytes_read < path.stat().st_size / 10


def test_time_range_errors_are_usage_errors(tmp_path):
    header = _header(num_samples=16000 * 2)
    path = tmp_path / "x.akc"
    write_akc(path, _codes(header, 100), header)
    with pytest.raises(UsageError, match="past the end"):
        read_akc(path, start_s=3)
    with pytest.raises(UsageError):
        read_akc(path, start_s=-1)
    with pytest.raises(UsageError):
        read_akc(path, start_s=0, duration_s=0)
    _, got, first = read_akc(path, start_s=1.5, duration_s=100)
    assert first == 75 and got.shape[2] == 25


def test_file_can_be_read_while_it_is_being_written(tmp_path):
    header = _header(channels=2, num_codebooks=4)
    codes = _codes(header, 260, seed=3)
    path = tmp_path / "live.akc"
    writer = AkcWriter(path, header)
    writer.append(codes[:, :, :37])
    writer.append(codes[:, :, 37:120])  # two full chunks flushed, 20 frames pending
    reader = AkcReader(path, partial=True)
    assert not reader.complete and reader.num_chunks == 2 and reader.header.num_samples is None
    assert torch.equal(reader.read_frames(0, 100), codes[:, :, :100])
    with pytest.raises(BitstreamError, match=r"live.akc: byte \d+: no trailer"):
        AkcReader(path)
    writer.append(codes[:, :, 120:260])
    reader.refresh()
    assert reader.num_chunks == 5 and not reader.complete
    streamed = [c for _, c in reader.iter_chunks(2)]
    assert torch.equal(torch.cat(streamed, 2), codes[:, :, 100:250])
    writer.close(num_samples=260 * 320 - 100)
    reader.refresh()
    assert reader.complete and reader.num_frames == 260 and reader.header.num_samples == 260 * 320 - 100
    assert torch.equal(reader.read_chunk(5), codes[:, :, 250:260])
    reader.close()
    got_header, got, _ = read_akc(path)
    assert torch.equal(got, codes) and got_header.num_samples == 260 * 320 - 100


def test_writer_rejects_bad_codes_and_lengths(tmp_path):
    header = _header(num_codebooks=2, codebook_size=1000)
    with AkcWriter(tmp_path / "a.akc", header) as writer:
        with pytest.raises(ValueError):
            writer.append(torch.full((1, 2, 3), 1000))
        with pytest.raises(ValueError):
            writer.append(torch.zeros(1, 3, 3, dtype=torch.int64))
        with pytest.raises(ValueError):
            writer.append(torch.zeros(1, 2, 3))
        writer.append(torch.zeros(1, 2, 3, dtype=torch.int64))
        with pytest.raises(ValueError, match="do not fit"):
            writer.close(num_samples=3 * 320 + 1)
        writer.close(num_samples=3 * 320)
    with pytest.raises(ValueError):
        write_akc(tmp_path / "b.akc", torch.zeros(1, 2, 3, dtype=torch.int64), header)  # no num_samples


@pytest.mark.parametrize(
    "overrides",
    [
        {"channels": 0},
        {"channels": 65},
        {"num_codebooks": 65},
        {"codebook_size": 1},
        {"codebook_size": 65537},
        {"sample_rate": 384001},
        {"frame_rate": Fraction(0)},
        {"frame_rate": 16001},
        {"frame_rate": 0.1 + 0.2},
        {"chunk_frames": 51},
        {"model_name": "x" * 256},
        {"model_name": "a\nb"},
        {"weights_hash": "é"},
        {"num_samples": -1},
    ],
)
def test_header_bounds(overrides):
    with pytest.raises(ValueError):
        _header(**overrides)


def _crc_seed(data: bytes) -> tuple[int, int]:
    header_size = struct.unpack_from("<H", data, 6)[0]
    return zlib.crc32(data[: header_size - 4]), header_size


def test_corrupt_files_name_the_byte_offset(tmp_path):
    header = _header(num_samples=16000 * 3)
    path = tmp_path / "x.akc"
    write_akc(path, _codes(header, 150), header)
    data = path.read_bytes()
    _, header_size = _crc_seed(data)
    stride = 6 + 750

    def damaged(mutate) -> str:
        broken = bytearray(data)
        mutate(broken)
        path.write_bytes(bytes(broken))
        with pytest.raises(BitstreamError) as info:
            read_akc(path)
        return str(info.value)

    assert (
        damaged(lambda b: b.__setitem__(0, ord("X")))
        == f"{path}: byte 0: not an .akc file (magic b'XKC\\x00', expected b'AKC\\x00')"
    )
    assert "byte 4: unsupported .akc version 4" in damaged(lambda b: b.__setitem__(4, 4))
    assert f"byte {header_size - 4}: header CRC mismatch" in damaged(lambda b: b.__setitem__(10, b[10] ^ 1))
    chunk1 = header_size + stride
    assert f"byte {chunk1}: chunk 1 CRC mismatch" in damaged(
        lambda b: b.__setitem__(chunk1 + 100, b[chunk1 + 100] ^ 4)
    )
    assert "no trailer" in damaged(lambda b: b.__delitem__(slice(len(b) - 30, None)))
    assert f"byte {len(data) - 22}: trailer CRC mismatch" in damaged(lambda b: b.__setitem__(-5, b[-5] ^ 1))
    # Swapping two chunks keeps every CRC intact but chunk CRCs cover their index.
    swapped = damaged(
        lambda b: b.__setitem__(
            slice(header_size, header_size + 2 * stride),
            b[header_size + stride : header_size + 2 * stride] + b[header_size : header_size + stride],
        )
    )
    assert f"byte {header_size}: chunk 0 CRC mismatch" in swapped
    path.write_bytes(b"AKC")
    with pytest.raises(BitstreamError, match="byte 0: file of 3 bytes is too short"):
        read_akc(path)
    with pytest.raises(BitstreamError, match="cannot open"):
        read_akc(tmp_path / "missing.akc")


@pytest.mark.parametrize("field", ["model_name", "weights_hash"])
def test_undecodable_header_text_names_its_own_field(field):
    """A model name that is not UTF-8 or a weights hash that is not ASCII names the byte of its own field's
    length (was: the model name's, for both)."""
    header = _header(num_samples=0)
    data = bytearray(header.encode())
    name_length = 38
    hash_length = name_length + 1 + data[name_length]
    at = name_length if field == "model_name" else hash_length
    data[at + 1] = 0xFF  # never valid UTF-8 (nor ASCII)
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(BitstreamError, match=f"<bytes>: byte {at}: "):
        AkcReader(bytes(data), partial=True)


def test_out_of_range_code_with_valid_crc_is_rejected():
    header = _header(num_codebooks=1, codebook_size=1000, num_samples=320)
    writer_path = bytearray()

    class Sink:
        def write(self, data: bytes) -> None:
            writer_path.extend(data)

        def flush(self) -> None:
            pass

    with AkcWriter(Sink(), header) as writer:
        writer.append(torch.tensor([[[999]]]))
    seed, header_size = _crc_seed(bytes(writer_path))
    chunk = bytearray(writer_path[header_size : header_size + 2 + 2])
    chunk[2:4] = (1023 << 6).to_bytes(2, "big")  # the 10-bit field now holds 1023 >= 1000
    crc = zlib.crc32(bytes(chunk), zlib.crc32(struct.pack("<Q", 0), seed))
    broken = (
        bytes(writer_path[:header_size])
        + bytes(chunk)
        + struct.pack("<I", crc)
        + bytes(writer_path[header_size + 8 :])
    )
    with pytest.raises(
        BitstreamError, match=f"<bytes>: byte {header_size + 2}: code 1023 >= codebook size 1000"
    ):
        AkcReader(broken).read_frames(0, 1)
    with pytest.raises(BitstreamError, match=f"byte {header_size + 2}: code 1023"):
        AkcReader(broken).verify()  # what `audiokit info` runs (was: accepted)
    assert torch.equal(AkcReader(bytes(writer_path)).read_frames(0, 1), torch.tensor([[[999]]]))


def test_the_docs_python_seek_decodes_the_span_of_a_whole_decode(tmp_path):
    """The seek recipe docs/bitstream.md gives for Python, run as written: samples [start, stop) of an
    .akc equal the same span of a whole decode (the recipe once left out the decoder's delay and
    history, and `decode_segment` refused its frames)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bitstream.md").read_text()
    (recipe,) = re.findall(r"```python\n(# samples \[start, stop\).*?)```", doc, re.S)
    torch.manual_seed(0)
    wav = tmp_path / "x.wav"
    sf.write(wav, (0.1 * torch.randn(16000 * 3)).numpy(), 16000)
    codec, sha256 = load_codec("speech-16k")
    path = tmp_path / "x.akc"
    encode_file(codec, wav, path, codec.bitrates[-1], sha256)
    with AkcReader(path) as reader:
        whole = codec.decode(Codes(reader.read_frames(0, reader.num_frames), 16000 * 3, 1))
    for start, stop in ((0, 320), (16001, 30000), (40000, 48000)):
        scope = {"codec": codec, "path": path, "start": start, "stop": stop}
        exec(recipe, {"math": math, "AkcReader": AkcReader, "Codes": Codes}, scope)
        torch.testing.assert_close(scope["segment"], whole[..., start:stop], rtol=0, atol=1e-5)
