"""The learned causal prior of entropy-coded ``.akc`` (:mod:`audiokit.entropy_model`): integer tables that
equal a naive pure-Python computation, exact round trips on real speech codes, corrupt payloads, files,
the shipped model and the golden file it writes."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from audiokit import ops
from audiokit.bitstream import AkcReader, AkcWriter, read_akc, write_akc
from audiokit.cli import main
from audiokit.coding import entropy_model_file, entropy_model_for, entropy_models_for, load_codec
from audiokit.entropy import EntropyDecodeError, EntropyModel
from audiokit.entropy_model import CONFIG_FIELDS, PriorModel
from audiokit.errors import BitstreamError
from audiokit.ops import cpp
from tests.test_entropy import GOLDEN, SHIPPED_SHA256, _header

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_PRIOR = DATA / "speech16k_entropy_prior.akc"  # the codes of GOLDEN, coded with session 17's prior (@1)
GOLDEN_PRIOR_SHA256 = "68ad2cfb6c01811f29f1f2c6adb113da480cf6323c06c9e8aec5a9d11d545fa0"
# the same codes coded with the prior shipped from session 18 to session 38 (speech-16k.entropy@2)
GOLDEN_PRIOR2 = DATA / "speech16k_entropy_prior2.akc"
GOLDEN_PRIOR2_SHA256 = "dde94d19a2c9c16e19217ce53a46d0df66d09ce259e159e206247b9574ad8a5f"


def _toy_prior(
    seed: int = 0,
    size: int = 64,
    stages: int = 4,
    lags: int = 2,
    width: int = 8,
    hidden: int = 12,
    **exponents: int,
):
    rng = np.random.default_rng(seed)

    def i8(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    config = dict(
        lags=lags,
        num_stages=stages,
        codebook_size=size,
        width=width,
        hidden=hidden,
        precision=15,
        act_exp=7,
        prev_exp=6,
        cur_exp=7,
        w1_exp=7,
        w2_exp=8,
        out_exp=6,
        table_exp=3,
    )
    config.update(exponents)
    table = [round(2**20 * math.exp(-i / 8)) for i in range(120)] + [0]
    tensors = {
        "config": np.asarray([config[k] for k in CONFIG_FIELDS], dtype=np.int32),
        "prev": i8(lags, stages, size + 1, width),
        "cur": i8(stages, size, width),
        "stage": rng.integers(-300, 300, (stages, width)).astype(np.int32),
        "w1": i8(stages, width, hidden),
        "b1": rng.integers(-9000, 9000, (stages, hidden)).astype(np.int32),
        "w2": i8(stages, hidden, width),
        "b2": rng.integers(-9000, 9000, (stages, width)).astype(np.int32),
        "out": i8(stages, size, width),
        "bias": rng.integers(-5000, 5000, (stages, size)).astype(np.int32),
        "exp_table": np.asarray(table, dtype=np.int32),
    }
    return PriorModel(tensors)


def _naive_frequencies(model: PriorModel, codes: list, t: int, c: int, q: int) -> list[int]:
    """The table of code ``codes[t][c][q]`` of one chunk, in plain Python ints (loops, no numpy)."""
    cfg = model.config
    w = {name: array.tolist() for name, array in model.tensors.items()}
    act, size, width = cfg["act_exp"], cfg["codebook_size"], cfg["width"]

    def shift(v: int, s: int) -> int:
        return (v + (1 << (s - 1))) >> s if s > 0 else v << -s

    x = list(w["stage"][q])
    for lag in range(1, cfg["lags"] + 1):
        for stage in range(q + 1):
            code = codes[t - lag][c][stage] if t - lag >= 0 else size
            for j in range(width):
                x[j] += w["prev"][lag - 1][stage][code][j] << (act - cfg["prev_exp"])
    for stage in range(q):
        for j in range(width):
            x[j] += w["cur"][stage][codes[t][c][stage]][j] << (act - cfg["cur_exp"])
    h = []
    for m in range(cfg["hidden"]):
        acc = w["b1"][q][m] + sum(x[j] * w["w1"][q][j][m] for j in range(width))
        h.append(max(shift(acc, cfg["w1_exp"]), 0))
    y = []
    for j in range(width):
        acc = w["b2"][q][j] + sum(h[m] * w["w2"][q][m][j] for m in range(cfg["hidden"]))
        y.append(max(x[j] + shift(acc, cfg["w2_exp"]), 0))
    logits = [w["bias"][q][k] + sum(y[j] * w["out"][q][k][j] for j in range(width)) for k in range(size)]
    top = max(logits)
    table = w["exp_table"]
    weights = [
        table[min(shift(top - v, act + cfg["out_exp"] - cfg["table_exp"]), len(table) - 1)] for v in logits
    ]
    total, spare = 1 << cfg["precision"], (1 << cfg["precision"]) - size
    freqs = [1 + v * spare // sum(weights) for v in weights]
    freqs[weights.index(max(weights))] += total - sum(freqs)
    return freqs


@pytest.mark.parametrize("precision", [15, 16])
def test_tables_equal_a_naive_integer_computation(precision):
    model = _toy_prior(precision=precision)
    codes = np.random.default_rng(1).integers(0, 64, (5, 2, 4))
    tables = model.frequencies(codes)
    assert tables.dtype == np.int64 and (tables >= 1).all() and (tables.sum(-1) == 1 << precision).all()
    listed = codes.tolist()
    for t in range(5):
        for c in range(2):
            for q in range(4):
                assert tables[t, c, q].tolist() == _naive_frequencies(model, listed, t, c, q), (t, c, q)


def test_shipped_prior_tables_equal_the_naive_computation():
    model = entropy_model_for("speech-16k", SHIPPED_SHA256)
    assert isinstance(model, PriorModel)
    codes = read_akc(GOLDEN)[1].numpy().transpose(2, 0, 1)[:4]  # [frames, channels, 12]
    tables = model.frequencies(codes)
    listed = codes.tolist()
    for t, q in ((0, 0), (1, 5), (3, 11)):
        assert tables[t, 0, q].tolist() == _naive_frequencies(model, listed, t, 0, q)


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_random_codes_any_shape(seed):
    rng = np.random.default_rng(seed)
    model = _toy_prior(seed, precision=15 + seed % 2)  # 16: the coder's finest tables
    for _ in range(15):
        frames, channels, n_q = int(rng.integers(0, 30)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
        codes = rng.integers(0, 64, (frames, channels, n_q))
        if rng.random() < 0.3:
            codes[:] = int(rng.integers(64))
        payload = model.encode(codes)
        assert not payload or payload[-1] != 0
        assert np.array_equal(model.decode(payload, frames, channels, n_q), codes)
        assert len(payload) <= 2 * codes.size + 4


def test_round_trip_real_speech_codes_and_the_saving():
    model = entropy_model_for("speech-16k", SHIPPED_SHA256)
    codes = read_akc(GOLDEN)[1].numpy().transpose(2, 0, 1)  # 2.5 s of French speech, 12 codebooks
    for n_q in (3, 6, 12):
        for chunk in (codes[:50, :, :n_q], codes[50:100, :, :n_q], codes[100:, :, :n_q]):
            payload = model.encode(chunk)
            assert np.array_equal(model.decode(payload, *chunk.shape), chunk)
            assert model.encode(chunk) == payload  # deterministic
        bits = model.bits(codes[:50, :, :n_q]).mean()
        print(f"{n_q} codebooks: {bits:.3f} bits a code (10 at fixed width)")
        assert bits < 10
    two = np.concatenate([codes[:50], codes[50:100]], axis=1)  # two channels decoded together
    assert np.array_equal(model.decode(model.encode(two), 50, 2, 12), two)


def test_corrupt_payloads_give_clean_errors():
    model = _toy_prior()
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 64, (20, 2, 4))
    payload = model.encode(codes)
    with pytest.raises(EntropyDecodeError, match="after the last entropy-coded code"):
        model.decode(payload + b"\x01" * 8, 20, 2, 4)
    with pytest.raises(EntropyDecodeError, match="ends in a zero byte"):
        model.decode(payload + b"\x00", 20, 2, 4)
    for _ in range(200):  # flipped bits: an EntropyDecodeError or codes in range, never anything else
        bad = bytearray(payload)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            decoded = model.decode(bytes(bad), 20, 2, 4)
        except EntropyDecodeError as exc:
            assert 0 <= exc.position <= len(bad)
        else:
            assert decoded.shape == codes.shape and decoded.min() >= 0 and decoded.max() < 64
    with pytest.raises(ValueError):
        model.encode(np.full((2, 1, 4), 64))
    with pytest.raises(ValueError):
        model.decode(payload, 20, 2, 5)  # more codebooks than the model covers


def test_files_seek_and_corruption(tmp_path):
    model = _toy_prior()
    header = _header(model, channels=2, n_q=4, frames=130)
    codes = torch.randint(0, 64, (2, 4, 130), generator=torch.Generator().manual_seed(3))
    path = tmp_path / "x.akc"
    write_akc(path, codes, header, model)
    with AkcReader(path, entropy=model) as reader:
        assert reader.header.entropy_model == model.model_id
        assert torch.equal(reader.read_frames(0, 130), codes)
        assert torch.equal(reader.read_frames(101, 120), codes[:, :, 101:120])  # chunks decode on their own
    data = bytearray(path.read_bytes())
    with AkcReader(path, entropy=model) as reader:
        start = reader.chunk_offset(1)
    data[start + 12] ^= 0x04
    with pytest.raises(BitstreamError, match=f"byte {start}: chunk 1 CRC mismatch"):
        with AkcReader(bytes(data), entropy=model) as reader:
            reader.read_frames(0, 130)
    with pytest.raises(BitstreamError, match="entropy-coded with tables"):
        with AkcReader(path, entropy=_toy_prior(seed=9)) as reader:
            reader.read_chunk(0)


def test_save_load_and_the_id(tmp_path):
    model = _toy_prior()
    path = model.save(tmp_path / "m.entropy.safetensors")
    again = PriorModel.load(path)
    assert again.model_id == model.model_id
    assert all(np.array_equal(again.tensors[k], model.tensors[k]) for k in model.tensors)
    assert _toy_prior(seed=1).model_id != model.model_id
    changed = dict(model.tensors)
    changed["bias"] = changed["bias"].copy()
    changed["bias"][0, 0] += 1
    assert PriorModel(changed).model_id != model.model_id
    from safetensors.numpy import save

    path.write_bytes(
        save(changed, metadata={"format": "audiokit-entropy-prior", "model_id": str(model.model_id)})
    )
    with pytest.raises(ValueError, match="does not match"):
        PriorModel.load(path)


def test_shipped_models_are_found_by_id():
    """The preferred prior encodes; the static tables and the superseded priors (session 17's, replaced in
    session 18, and session 18's, replaced in session 38) are found by the id a header names, so the files
    coded with them still decode."""
    models = entropy_models_for("speech-16k", SHIPPED_SHA256)
    assert [type(m) for m in models] == [PriorModel, EntropyModel, PriorModel, PriorModel]
    assert len({m.model_id for m in models}) == 4
    assert entropy_model_for("speech-16k", SHIPPED_SHA256).model_id == models[0].model_id
    for model in models:
        assert entropy_model_for("speech-16k", SHIPPED_SHA256, model.model_id).model_id == model.model_id
    weights = Path(__file__).resolve().parent.parent / "audiokit" / "weights"
    assert (weights / "speech-16k.entropy.safetensors").stat().st_size <= 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("golden", "sha256", "prior_file"),
    [
        (GOLDEN_PRIOR, GOLDEN_PRIOR_SHA256, "speech-16k.entropy@1.safetensors"),
        (GOLDEN_PRIOR2, GOLDEN_PRIOR2_SHA256, "speech-16k.entropy@2.safetensors"),
    ],
)
def test_golden_prior_file_bytes_do_not_change(tmp_path, golden, sha256, prior_file):
    """Files coded with each superseded prior decode to their codes, and re-encode to the same bytes."""
    data = golden.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256
    header, codes, _ = read_akc(golden)  # the model is found through the header's weights and id
    assert entropy_model_file("speech-16k", SHIPPED_SHA256, header.entropy_model) == prior_file
    assert torch.equal(codes, read_akc(GOLDEN)[1])
    again = tmp_path / "again.akc"
    streamed = replace(header, num_samples=None, source_samples=None)
    old = entropy_model_for(header.model_name, header.weights_hash, header.entropy_model)
    with AkcWriter(again, streamed, old) as writer:
        writer.append(codes)
        writer.close(header.num_samples, header.source_samples)
    assert again.read_bytes() == data
    assert len(data) < GOLDEN.stat().st_size  # smaller than with the static tables
    # the same codes with today's prior: decodable and smaller again
    now, prior = tmp_path / "now.akc", entropy_model_for(header.model_name, header.weights_hash)
    with AkcWriter(now, replace(streamed, entropy_model=prior.model_id), prior) as writer:
        writer.append(codes)
        writer.close(header.num_samples, header.source_samples)
    assert read_akc(now)[0].entropy_model != header.entropy_model
    assert torch.equal(read_akc(now)[1], codes)
    assert now.stat().st_size < len(data)
    load_codec("speech-16k")  # the codec the header names is the shipped one


def _decoded(model: PriorModel, payload: bytes, shape: tuple[int, int, int], backend: str):
    """Codes, or the error as ``(position, message)``, of decoding ``payload`` on ``backend``."""
    with ops.use_backend(backend):
        try:
            return model.decode(payload, *shape)
        except EntropyDecodeError as exc:
            return exc.position, str(exc)


@pytest.mark.skipif(cpp.load() is None, reason=f"no C++ kernels: {cpp.unavailable_reason()}")
def test_the_compiled_decoder_gives_the_numpy_decoders_codes_and_errors():
    """``kernels/cpu/prior_decode.cpp`` (used whenever it builds) against the numpy decoder: the same
    codes for random priors, shapes and codes and for the shipped prior on real speech, and the same
    error at the same byte for corrupt payloads."""
    rng = np.random.default_rng(11)
    cases = []
    for seed in range(4):
        model = _toy_prior(seed, lags=1 + seed, width=5 + 3 * seed, hidden=7 + seed, precision=15 + seed % 2)
        for _ in range(6):
            shape = (int(rng.integers(0, 25)), int(rng.integers(1, 3)), int(rng.integers(1, 5)))
            cases.append((model, rng.integers(0, 64, shape)))
    # activations near 2**43: logits beyond a double's exact integers, summed in int64 instead
    huge = _toy_prior(3, width=16, act_exp=36, prev_exp=0, cur_exp=0)
    assert huge._prev.max() * np.abs(huge.tensors["out"]).sum(-1).max() > 2**52
    cases += [(huge, rng.integers(0, 64, (12, 1, 4))), (huge, rng.integers(0, 64, (5, 2, 3)))]
    shipped = entropy_model_for("speech-16k", SHIPPED_SHA256)
    speech = read_akc(GOLDEN)[1].numpy().transpose(2, 0, 1)
    cases += [(shipped, speech[:50]), (shipped, speech[50:100, :, :3])]
    for model, codes in cases:
        payload = model.encode(codes)
        compiled = _decoded(model, payload, codes.shape, "cpp")
        assert np.array_equal(compiled, codes)
        assert np.array_equal(_decoded(model, payload, codes.shape, "torch"), codes)
        for _ in range(4 if len(payload) else 0):
            bad = bytearray(payload + b"\x01" * int(rng.integers(0, 2)))
            bad[int(rng.integers(len(payload)))] ^= 1 << int(rng.integers(8))
            if bad[-1] == 0:
                continue
            expected = _decoded(model, bytes(bad), codes.shape, "torch")
            got = _decoded(model, bytes(bad), codes.shape, "cpp")
            assert type(got) is type(expected)
            assert np.array_equal(got, expected) if isinstance(got, np.ndarray) else got == expected


def test_info_names_the_entropy_model_a_file_was_coded_with(tmp_path, capsys):
    """``audiokit info`` says which shipped model coded a file: the static tables, a superseded prior, or
    one this package lacks (a file from a newer package)."""
    toy = _toy_prior(size=1024, stages=12)
    header, codes, _ = read_akc(GOLDEN_PRIOR)
    newer = tmp_path / "newer.akc"
    streamed = replace(header, num_samples=None, source_samples=None, entropy_model=toy.model_id)
    with AkcWriter(newer, streamed, toy) as writer:
        writer.append(codes)
        writer.close(header.num_samples, header.source_samples)
    assert main(["info", str(GOLDEN), str(GOLDEN_PRIOR), str(newer)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "entropy-coded (speech-16k.entropy.json)" in lines[0]
    assert "entropy-coded (speech-16k.entropy@1.safetensors)" in lines[1]
    assert "entropy-coded (a model this package lacks)" in lines[2]
    assert entropy_model_file("speech-16k", SHIPPED_SHA256, toy.model_id) is None
    assert entropy_model_file("speech-16k", SHIPPED_SHA256, header.entropy_model) == (
        "speech-16k.entropy@1.safetensors"
    )
