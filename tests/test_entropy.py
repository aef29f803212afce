"""Entropy-coded ``.akc`` (version 3): the integer range coder, the chunk index, corrupt chunks, the golden
file, and files that name weights other than the shipped ones (the weights archive)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from audiokit import io
from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter, read_akc, write_akc
from audiokit.coding import decode_file, encode_file, entropy_model_for, load_codec
from audiokit.entropy import EntropyDecodeError, EntropyModel, count_codes
from audiokit.errors import BitstreamError, ModelError
from audiokit.models import Codec
from audiokit.models.archive import ARCHIVE_ENV, model_version, weights_for

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "speech16k_entropy.akc"  # audiokit encode --entropy of 2.5 s of samples/speech_fr_16k_a.flac
GOLDEN_SHA256 = "07759c82066d13971d82dccfbedaf91f40f3116839a859e22e84ff4cfa7da737"
SHIPPED_SHA256 = "02129b818b3081e532ec71097e00e6a969536c28406bd1a2f0175db03dd9a31f"
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "speech_fr_16k_a.flac"


def _skewed_model(tables: int = 4, size: int = 1024, seed: int = 0) -> EntropyModel:
    counts = np.random.default_rng(seed).integers(0, 40, (tables, size)) ** 3
    counts[0, : size // 2] = 0  # half the codes never seen: frequency 1
    return EntropyModel.from_counts(counts, precision=15)


def _header(model: EntropyModel, channels: int = 2, n_q: int = 4, frames: int = 130) -> AkcHeader:
    return AkcHeader(
        "toy",
        "cafe",
        16000,
        channels,
        n_q,
        model.codebook_size,
        Fraction(50),
        num_samples=frames * 320 - 5,
        source_rate=16000,
        source_samples=frames * 320 - 5,
        entropy_model=model.model_id,
    )


def test_tables_are_integers_summing_to_the_precision():
    model = _skewed_model()
    assert all(sum(t) == 1 << 15 and min(t) >= 1 for t in model.frequencies)
    assert model.frequencies[0][0] == 1  # an unseen code keeps frequency 1
    again = EntropyModel.from_counts(np.random.default_rng(0).integers(0, 40, (4, 1024)) ** 3 * 0 + 1)
    assert len(set(again.frequencies[0])) <= 2  # uniform counts: equal shares (+1 for the remainder)
    with pytest.raises(ValueError):
        EntropyModel(15, ((1, 2, 3),))


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_random_codes_any_shape(seed):
    rng = np.random.default_rng(seed)
    model = _skewed_model(seed=seed)
    for _ in range(40):
        frames, channels, n_q = int(rng.integers(0, 60)), int(rng.integers(1, 3)), int(rng.integers(1, 5))
        codes = rng.integers(0, 1024, (frames, channels, n_q))
        if rng.random() < 0.3:
            codes[:] = int(rng.integers(1024))  # one code throughout (the cheapest or the dearest)
        payload = model.encode(codes)
        assert not payload or payload[-1] != 0  # trailing zero bytes are left out
        assert np.array_equal(model.decode(payload, frames, channels, n_q), codes)
        assert len(payload) <= 2 * codes.size + 4


def test_round_trip_real_codes_with_the_shipped_tables(tmp_path):
    _, codes, _ = read_akc(GOLDEN)
    model = entropy_model_for("speech-16k", SHIPPED_SHA256, 280094842)  # the static tables
    assert isinstance(model, EntropyModel)
    frames = codes.numpy().transpose(2, 0, 1)
    payload = model.encode(frames)
    assert np.array_equal(model.decode(payload, *frames.shape), frames)
    assert model.encode(frames) == payload  # deterministic: the same bytes from two runs
    counts = count_codes(codes.numpy(), 1024)
    assert counts.shape == (12, 1024) and counts.sum() == codes.numel()


def test_writer_reader_round_trip_seek_and_partial_reading(tmp_path):
    model = _skewed_model()
    header = _header(model)
    codes = torch.randint(0, 1024, (2, 4, 130), generator=torch.Generator().manual_seed(3))
    path = tmp_path / "x.akc"
    write_akc(path, codes, header, model)
    with AkcReader(path, entropy=model) as reader:
        assert reader.header.version == 3 and reader.complete and reader.num_chunks == 3
        assert torch.equal(reader.read_frames(0, 130), codes)
        reader._source.bytes_read = 0
        assert torch.equal(reader.read_frames(101, 120), codes[:, :, 101:120])
        assert reader.bytes_read < 2 * reader._chunk_sizes[2]  # only the last chunk is read
    # while it is being written: the full chunks written so far, then the trailer's view
    live = tmp_path / "live.akc"
    writer = AkcWriter(live, header, model)
    reader = AkcReader(live, partial=True, entropy=model)
    assert reader.num_chunks == 0
    writer.append(codes[:, :, :75])
    reader.refresh()
    assert reader.num_chunks == 1 and not reader.complete
    assert torch.equal(reader.read_chunk(0), codes[:, :, :50])
    writer.append(codes[:, :, 75:])
    writer.close()
    reader.refresh()
    assert reader.complete and torch.equal(reader.read_frames(0, 130), codes)
    reader.close()
    assert live.read_bytes() == path.read_bytes()  # streamed and whole-file writes agree
    # the writer refuses a model other than the header's
    with pytest.raises(ValueError, match="entropy model"):
        AkcWriter(tmp_path / "y.akc", header, _skewed_model(seed=9))


def test_corrupt_entropy_chunks_name_the_byte_offset(tmp_path):
    model = _skewed_model()
    header = _header(model)
    codes = torch.randint(0, 1024, (2, 4, 130), generator=torch.Generator().manual_seed(4))
    path = tmp_path / "x.akc"
    write_akc(path, codes, header, model)
    data = path.read_bytes()
    with AkcReader(path, entropy=model) as reader:
        start, size = reader.chunk_offset(1), reader._chunk_sizes[1]
    seed = zlib.crc32(data[: header.encoded_size - 4])

    def read(raw: bytes) -> str:
        with pytest.raises(BitstreamError) as info:
            with AkcReader(raw, entropy=model) as reader:
                reader.read_frames(0, reader.num_frames)
        return str(info.value)

    flipped = bytearray(data)
    flipped[start + 10] ^= 0x10
    assert read(bytes(flipped)) == f"<bytes>: byte {start}: chunk 1 CRC mismatch (corrupt data)"
    # verify() finds it without decoding, so without the entropy model too (what `audiokit info` runs)
    AkcReader(data).verify()
    with pytest.raises(BitstreamError, match=f"^<bytes>: byte {start}: chunk 1 CRC mismatch"):
        AkcReader(bytes(flipped)).verify()

    def forged(edit) -> bytes:  # the payload edited and the chunk CRC recomputed
        b = bytearray(data)
        edit(b)
        crc = zlib.crc32(bytes(b[start : start + size - 4]), zlib.crc32(struct.pack("<Q", 1), seed))
        struct.pack_into("<I", b, start + size - 4, crc)
        return bytes(b)

    message = read(forged(lambda b: b.__setitem__(start + size - 5, 0)))
    assert message == f"<bytes>: byte {start + size - 5}: chunk 1: entropy-coded payload ends in a zero byte"
    message = read(forged(lambda b: struct.pack_into("<H", b, start + 2, 3)))
    assert message.startswith(f"<bytes>: byte {start + 2}: chunk 1: payload size 3 disagrees")
    with pytest.raises(BitstreamError, match=f"^<bytes>: byte {start + 2}: chunk 1: payload size 3"):
        AkcReader(forged(lambda b: struct.pack_into("<H", b, start + 2, 3))).verify()  # was accepted
    # the index: a chunk size that does not add up, with the trailer CRC recomputed
    b = bytearray(data)
    index_at = len(b) - 28 - 6
    struct.pack_into("<H", b, index_at, struct.unpack_from("<H", b, index_at)[0] + 1)
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[index_at - 2 : len(b) - 4]), seed))
    assert "chunk index" in read(bytes(b)) and f"byte {index_at - 2}:" in read(bytes(b))
    # truncated: the last bytes are not a trailer (was "trailer says 1739...2 frames: their index...")
    for cut in (10, len(data) // 2):
        assert "no trailer: the file is truncated or was not closed" in read(data[:-cut])
    # tables other than the encoder's
    with pytest.raises(BitstreamError, match="entropy-coded with tables"):
        with AkcReader(path, entropy=_skewed_model(seed=5)) as reader:
            reader.read_chunk(0)
    with pytest.raises(EntropyDecodeError, match="after the last entropy-coded code"):
        model.decode(model.encode(codes.numpy().transpose(2, 0, 1)) + b"\x01" * 8, 130, 2, 4)


def test_golden_file_bytes_do_not_change(tmp_path):
    data = GOLDEN.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    header, codes, _ = read_akc(GOLDEN)  # the tables are found through the header's weights
    assert header.version == 3 and header.weights_hash == SHIPPED_SHA256 and header.num_samples == 40000
    again = tmp_path / "again.akc"
    streamed = replace(header, num_samples=None, source_samples=None)  # as a streaming encode writes it
    static = entropy_model_for(header.model_name, header.weights_hash, header.entropy_model)  # not the prior
    assert isinstance(static, EntropyModel)
    with AkcWriter(again, streamed, static) as writer:
        writer.append(codes)
        writer.close(header.num_samples, header.source_samples)
    assert again.read_bytes() == data
    # the shipped codec (v1 wrote the file; later versions write the same codes) still codes that audio
    # to these codes, with and without --entropy: the golden bytes under the shipped weights' hash
    codec, sha256 = load_codec("speech-16k")
    wav, _ = io.load(SAMPLE)
    source = tmp_path / "in.wav"
    io.save(source, wav[:, :40000], 16000, subtype="FLOAT")
    encode_file(codec, source, tmp_path / "fixed.akc", 6000, sha256)
    assert torch.equal(read_akc(tmp_path / "fixed.akc")[1], codes)
    encode_file(codec, source, tmp_path / "entropy.akc", 6000, sha256, entropy=static)
    with AkcWriter(tmp_path / "expected.akc", replace(streamed, weights_hash=sha256), static) as writer:
        writer.append(codes)
        writer.close(header.num_samples, header.source_samples)
    assert (tmp_path / "entropy.akc").read_bytes() == (tmp_path / "expected.akc").read_bytes()
    # the decoded audio is the same with and without entropy coding
    decode_file(codec, tmp_path / "fixed.akc", tmp_path / "fixed.wav", sha256)
    decode_file(codec, GOLDEN, tmp_path / "entropy.wav", sha256)
    assert (tmp_path / "fixed.wav").read_bytes() == (tmp_path / "entropy.wav").read_bytes()


# -- files that name other weights: the archive ------------------------------------------------------
def _archive(tmp_path: Path, weights: Path, sha256: str, version: int = 0) -> Path:
    archive = tmp_path / "archive.json"
    entry = {
        "model": "speech-16k",
        "version": version,
        "file": weights.name,
        "source": "x",
        "commit": "abc123",
    }
    archive.write_text(json.dumps({"weights": {sha256: entry}}))
    return archive


def test_file_of_other_weights_decodes_through_the_archive(tmp_path, tiny_codec_file, monkeypatch):
    old = tmp_path / "speech-16k@0.safetensors"
    Codec.from_pretrained(tiny_codec_file).save_pretrained(old)
    codec, sha256 = load_codec(str(old))
    assert sha256 != SHIPPED_SHA256
    akc = tmp_path / "old.akc"
    encode_file(codec, SAMPLE, akc, codec.bitrates[-1], sha256)
    expected = tmp_path / "expected.wav"
    decode_file(codec, akc, expected, sha256)

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "audiokit", *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**__import__("os").environ, **env},
        )

    # not registered: a one-line error naming the hash
    done = cli("decode", str(akc), str(tmp_path / "a.wav"))
    assert done.returncode != 0 and sha256 in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # registered: decoded with those weights, without --model; `info` names the version
    archive = _archive(tmp_path, old, sha256)
    done = cli("decode", str(akc), str(tmp_path / "a.wav"), **{ARCHIVE_ENV: str(archive)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.wav").read_bytes() == expected.read_bytes()
    done = cli("info", str(akc), **{ARCHIVE_ENV: str(archive)})
    assert "speech-16k@0" in done.stdout, done.stdout
    monkeypatch.setenv(ARCHIVE_ENV, str(archive))
    assert model_version("speech-16k", sha256) == "speech-16k@0"
    assert model_version("speech-16k", SHIPPED_SHA256) == "speech-16k@1"
    assert load_codec("speech-16k@0")[1] == sha256
    # registered but absent: says which weights and how to get them
    old.unlink()
    with pytest.raises(ModelError) as info:
        weights_for("speech-16k", sha256)
    message = str(info.value)
    assert sha256 in message and "git show abc123:x" in message and "\n" not in message
