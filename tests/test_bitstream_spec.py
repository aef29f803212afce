"""docs/bitstream.md as an independent decoder reads it: a small reader written from the doc alone
(struct, zlib, numpy, safetensors; nothing from audiokit's bitstream or entropy code), checked field by
field and code by code against AkcReader on freshly written files of versions 1 to 3."""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLES
from safetensors.numpy import load_file

from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter
from audiokit.entropy import EntropyModel
from audiokit.entropy_model import PriorModel
from audiokit.models import WEIGHTS_DIR


def rshift(v, s):  # the doc's rounding shift
    return (v + (1 << (s - 1))) >> s if s > 0 else v << -s


class RangeDecoder:
    def __init__(self, data: bytes):
        self.data, self.pos, self.range = data, 4, 2**32 - 1
        self.code = int.from_bytes((data[:4] + bytes(4))[:4], "big")
        assert not data or data[-1] != 0, "payload ends in a zero byte"

    def decode(self, freqs: np.ndarray, precision: int) -> int:
        r = self.range >> precision
        v = self.code // r
        assert v < 1 << precision
        starts = np.concatenate([[0], np.cumsum(freqs)])
        x = int(np.searchsorted(starts, v, side="right")) - 1
        self.code -= r * int(starts[x])
        self.range = r * int(freqs[x])
        while self.range < 1 << 24:
            byte = self.data[self.pos] if self.pos < len(self.data) else 0
            self.code, self.pos, self.range = (
                ((self.code << 8) | byte) & 0xFFFFFFFF,
                self.pos + 1,
                self.range << 8,
            )
        return x


def static_model(path) -> tuple[int, object]:
    j = json.loads(path.read_text())
    freqs = np.array(j["frequencies"], dtype=np.int64)
    blob = struct.pack("<III", j["precision"], *freqs.shape) + freqs.astype("<u4").tobytes()
    return zlib.crc32(blob), lambda history, c, q, t: (freqs[q], j["precision"])


PRIOR_FIELDS = (
    "lags num_stages codebook_size width hidden precision"
    + " act_exp prev_exp cur_exp w1_exp w2_exp out_exp table_exp"
)
PRIOR_ORDER = ("config", "prev", "cur", "stage", "w1", "b1", "w2", "b2", "out", "bias", "exp_table")


def prior_model(path) -> tuple[int, object]:
    t = load_file(str(path))
    crc = zlib.crc32(b"audiokit-entropy-prior")
    for name in PRIOR_ORDER:
        a = t[name]
        head = name.encode() + a.dtype.str.encode() + struct.pack(f"<{a.ndim}I", *a.shape)
        crc = zlib.crc32(a.astype(a.dtype.newbyteorder("<")).tobytes(), zlib.crc32(head, crc))
    g = dict(zip(PRIOR_FIELDS.split(), (int(v) for v in t["config"]), strict=True))
    m = {k: t[k].astype(np.int64) for k in PRIOR_ORDER}
    size, total = g["codebook_size"], 1 << g["precision"]

    def table(codes, c, q, t):  # codes [channels, n_q, frames] of the chunk decoded so far
        x = m["stage"][q].copy()
        for lag in range(1, g["lags"] + 1):
            for q2 in range(q + 1):
                k = codes[c, q2, t - lag] if t >= lag else size
                x += m["prev"][lag - 1, q2, k] << (g["act_exp"] - g["prev_exp"])
        for q2 in range(q):
            x += m["cur"][q2, codes[c, q2, t]] << (g["act_exp"] - g["cur_exp"])
        h = np.maximum(rshift(x @ m["w1"][q] + m["b1"][q], g["w1_exp"]), 0)
        y = np.maximum(x + rshift(h @ m["w2"][q] + m["b2"][q], g["w2_exp"]), 0)
        logit = m["out"][q] @ y + m["bias"][q]
        d = rshift(logit.max() - logit, g["act_exp"] + g["out_exp"] - g["table_exp"])
        w = m["exp_table"][np.minimum(d, len(m["exp_table"]) - 1)]
        f = 1 + w * (total - size) // w.sum()
        f[np.argmax(w)] += total - f.sum()
        return f, g["precision"]

    return crc, table


def spec_read(data: bytes, models: dict) -> tuple[dict, np.ndarray]:
    """Header and trailer fields and codes ``[channels, n_q, frames]`` as docs/bitstream.md defines them."""
    assert data[:4] == b"AKC\0"
    version, hsize = struct.unpack_from("<HH", data, 4)
    extra = {1: 0, 2: 4, 3: 8}[version]
    hcrc = zlib.crc32(data[: hsize - 4])
    assert hcrc == struct.unpack_from("<I", data, hsize - 4)[0]
    keys = "sample_rate channels num_codebooks flags codebook_size fr_num fr_den chunk_frames num_samples"
    h = dict(zip(keys.split(), struct.unpack_from("<IHBBIIIHQ", data, 8), strict=True), version=version)
    l1 = data[38]
    l2 = data[39 + l1]
    assert hsize == 44 + l1 + l2 + extra and h["flags"] == (version == 3)
    h["model_name"], h["weights_hash"] = (
        data[39 : 39 + l1].decode(),
        data[40 + l1 : 40 + l1 + l2].decode("ascii"),
    )
    if version >= 2:
        h["source_rate"] = struct.unpack_from("<I", data, 40 + l1 + l2)[0]
    ch, nq, cf, size = h["channels"], h["num_codebooks"], h["chunk_frames"], h["codebook_size"]
    assert math.gcd(h["fr_num"], h["fr_den"]) == 1 and 1 <= cf <= max(1, h["fr_num"] // h["fr_den"])
    bits = math.ceil(math.log2(size))
    tail = {1: 22, 2: 30}.get(version, 28)
    if version < 3:
        n = struct.unpack_from("<HQQ", data, len(data) - tail)
        assert n[0] == 0
        h["num_frames"], h["trailer_num_samples"] = n[1:]
        sizes = [cf] * (h["num_frames"] // cf) + ([h["num_frames"] % cf] if h["num_frames"] % cf else [])
        sizes = [6 + math.ceil(f * ch * nq * bits / 8) for f in sizes]
    else:
        h["entropy_model"] = struct.unpack_from("<I", data, 44 + l1 + l2)[0]
        wide = 2 + 4 + 2 * cf * ch * nq + 4 + 4 > 65535
        s, fmt = (4, "<I") if wide else (2, "<H")
        h["num_frames"], h["trailer_num_samples"], h["source_samples"] = struct.unpack_from(
            "<QQQ", data, len(data) - 28
        )
        count = -(-h["num_frames"] // cf)
        tail += 2 + s * count
        assert struct.unpack_from("<H", data, len(data) - tail)[0] == 0
        sizes = [struct.unpack_from(fmt, data, len(data) - tail + 2 + s * i)[0] for i in range(count)]
    if version == 2:
        h["source_samples"] = struct.unpack_from("<Q", data, len(data) - 12)[0]
    assert zlib.crc32(data[-tail:-4], hcrc) == struct.unpack_from("<I", data, len(data) - 4)[0]
    assert hsize + sum(sizes) + tail == len(data)
    out, offset = [], hsize
    for i, chunk_size in enumerate(sizes):
        chunk = data[offset : offset + chunk_size]
        offset += chunk_size
        assert (
            zlib.crc32(chunk[:-4], zlib.crc32(struct.pack("<Q", i), hcrc))
            == struct.unpack("<I", chunk[-4:])[0]
        )
        f = struct.unpack_from("<H", chunk)[0]
        assert f == min(cf, h["num_frames"] - i * cf)
        codes = np.zeros((ch, nq, f), dtype=np.int64)
        if version < 3:
            field = np.unpackbits(np.frombuffer(chunk[2:-4], np.uint8))
            assert not field[f * ch * nq * bits :].any()
            values = field[: f * ch * nq * bits].reshape(-1, bits).astype(np.int64) @ (
                1 << np.arange(bits)[::-1]
            )
            codes[:] = values.reshape(f, ch, nq).transpose(1, 2, 0)
        else:
            payload_size = struct.unpack_from(fmt, chunk, 2)[0]
            assert 2 + s + payload_size + 4 == chunk_size
            decoder, table = RangeDecoder(chunk[2 + s : -4]), models[h["entropy_model"]]
            for t in range(f):
                for c in range(ch):
                    for q in range(nq):
                        freqs, precision = table(codes, c, q, t)
                        assert len(freqs) == size, "the model codes another codebook size"
                        codes[c, q, t] = decoder.decode(freqs, precision)
            assert decoder.pos >= payload_size, "bytes after the last code"
        assert (codes < size).all()
        out.append(codes)
    return h, np.concatenate(out, axis=2) if out else np.zeros((ch, nq, 0), dtype=np.int64)


def check_against_reader(data: bytes, models: dict, entropy=None) -> None:
    spec, codes = spec_read(data, models)
    with AkcReader(data, entropy=entropy) as reader:
        h = reader.header
        assert codes.tolist() == reader.read_frames(0, reader.num_frames).numpy().tolist()
        assert spec["num_frames"] == reader.num_frames and spec["version"] == h.version
    assert Fraction(spec["fr_num"], spec["fr_den"]) == h.frame_rate
    assert spec["num_samples"] in (h.num_samples, 2**64 - 1) and spec["trailer_num_samples"] == h.num_samples
    for key in ("sample_rate", "channels", "num_codebooks", "codebook_size", "chunk_frames", "model_name"):
        assert spec[key] == getattr(h, key), key
    for key in ("weights_hash", "source_rate", "source_samples", "entropy_model"):
        assert spec.get(key) == getattr(h, key), key


def _write(header: AkcHeader, codes: np.ndarray, samples: int, source=None, entropy=None) -> bytes:
    buf = io.BytesIO()
    with AkcWriter(buf, header, entropy) as writer:
        for start in range(0, codes.shape[2], 7):  # streamed in pieces that straddle chunks
            writer.append(codes[:, :, start : start + 7])
        writer.close(samples, source)
    return buf.getvalue()


def _header(**fields) -> AkcHeader:
    base = dict(model_name="spec", weights_hash="00ff", sample_rate=16000, channels=1, num_codebooks=2)
    return AkcHeader(**{**base, "codebook_size": 1024, "frame_rate": Fraction(50), **fields})


@pytest.mark.parametrize(
    ("fields", "frames", "samples"),
    [
        (dict(channels=2, num_codebooks=3, codebook_size=2), 123, 123 * 320),
        (dict(codebook_size=3, chunk_frames=7, num_samples=77 * 320), 77, 77 * 320),  # length in the header
        (dict(codebook_size=1000, source_rate=44100), 51, 16001),
        (dict(codebook_size=65536, sample_rate=44100, frame_rate=Fraction(44100, 512)), 200, 102397),
        (dict(sample_rate=8000, frame_rate=Fraction(1, 3), source_rate=8000), 5, 5 * 24000 - 7),
        (dict(source_rate=16000), 0, 0),
    ],
)
def test_fixed_width_files_read_as_the_doc_says(fields, frames, samples):
    h = _header(**fields)
    codes = np.random.default_rng(frames).integers(0, h.codebook_size, (h.channels, h.num_codebooks, frames))
    source = samples * h.source_rate // h.sample_rate if h.source_rate else None
    check_against_reader(_write(h, codes, samples, source), {})


@pytest.mark.parametrize(  # the last one's chunks need u32 sizes
    ("size", "precision", "channels", "n_q", "chunk_frames", "frames"),
    [(1024, 15, 1, 2, 0, 130), (200, 8, 2, 3, 0, 101), (4, 16, 1, 1, 0, 1), (16, 10, 64, 64, 8, 9)],
)
def test_static_table_files_read_as_the_doc_says(
    tmp_path, size, precision, channels, n_q, chunk_frames, frames
):
    rng = np.random.default_rng(frames)
    model = EntropyModel.from_counts(rng.integers(0, 1000, (n_q + 1, size)), precision)
    model_id, table = static_model(model.save(tmp_path / "tables.entropy.json"))
    assert model_id == model.model_id
    h = _header(channels=channels, num_codebooks=n_q, codebook_size=size, chunk_frames=chunk_frames)
    h = replace(h, source_rate=48000, entropy_model=model_id)
    codes = rng.integers(0, size, (channels, n_q, frames))
    check_against_reader(_write(h, codes, frames * 320, frames * 960, model), {model_id: table}, model)


def _shipped_models() -> dict:
    models = dict([static_model(WEIGHTS_DIR / "speech-16k.entropy.json")])
    for name in (
        "speech-16k.entropy.safetensors",
        "speech-16k.entropy@1.safetensors",
        "speech-16k.entropy@2.safetensors",
    ):
        model_id, table = prior_model(WEIGHTS_DIR / name)
        assert model_id == PriorModel.load(WEIGHTS_DIR / name).model_id
        models[model_id] = table
    return models


def test_golden_files_and_the_shipped_prior_read_as_the_doc_says():
    models = _shipped_models()
    for name in (
        "speech16k_v1.akc",
        "speech16k_entropy.akc",
        "speech16k_entropy_prior.akc",
        "speech16k_entropy_prior2.akc",
    ):
        check_against_reader((ROOT / "tests" / "data" / name).read_bytes(), models)
    # the shipped prior (the golden files predate it), on real codes, two channels, 10-frame chunks
    with AkcReader(ROOT / "tests" / "data" / "speech16k_v1.akc") as reader:
        h, codes = reader.header, reader.read_frames(0, reader.num_frames).numpy()
    prior = PriorModel.load(WEIGHTS_DIR / "speech-16k.entropy.safetensors")
    codes, samples = np.concatenate([codes, codes[:, :, ::-1]]), h.num_samples
    h = replace(h, channels=2, chunk_frames=10, source_rate=16000, entropy_model=prior.model_id)
    check_against_reader(_write(h, codes, samples, samples, prior), models, prior)


def test_audiokit_encode_files_read_as_the_doc_says(tmp_path):
    from audiokit import io as audio_io
    from audiokit.coding import encode_file, entropy_model_of, load_codec

    codec, sha256 = load_codec("speech-16k")
    wav, rate = audio_io.load(SAMPLES / "speech_ca_44k.flac")
    source = tmp_path / "in.wav"  # stereo, 44.1 kHz, 1 s and 1 sample
    audio_io.save(source, torch.cat([wav[:1, :44101], wav[:1, 5000:49101] / 2]), rate, subtype="FLOAT")
    for entropy in (None, entropy_model_of(codec, sha256)):
        encode_file(codec, source, tmp_path / "out.akc", 1500, sha256, entropy=entropy)
        check_against_reader((tmp_path / "out.akc").read_bytes(), _shipped_models())
