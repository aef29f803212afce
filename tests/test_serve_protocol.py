"""Unit tests of the wire protocol, the per-stream audio conversion and the engines (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiokit import Codec
from audiokit.serve import protocol as p
from audiokit.serve.connection import RateLimit
from audiokit.serve.engines import Engine, WireAudio

DEFAULTS = {"codec": "speech-16k", "enhance": "enhance-16k"}


def test_parse_start_accepts_and_defaults():
    start = p.parse_start(
        {"type": "start", "task": "codec", "sample_rate": 48000.0, "bitrate": 3000}, DEFAULTS
    )
    assert start == p.StartRequest("codec", "speech-16k", 48000, "f32le", 3000.0)
    start = p.parse_start({"type": "start", "task": "enhance", "sample_rate": 16000, "bitrate": 9}, DEFAULTS)
    assert start.bitrate is None and start.model == "enhance-16k"
    assert (start.atten_lim_db, start.dry) == (None, 0.0)  # the enhancer's defaults: no limit, no dry
    assert start.high_band is True  # enhance keeps an input's band above the model's unless told not to
    start = p.parse_start(
        {"type": "start", "task": "enhance", "sample_rate": 48000, "high_band": False}, DEFAULTS
    )
    assert start.high_band is False


@pytest.mark.parametrize(
    "change",
    [
        {"task": "separate"},
        {"sample_rate": 100},
        {"sample_rate": True},
        {"sample_rate": "16000"},
        {"format": "u8"},
        {"bitrate": None},
        {"bitrate": float("nan")},
        {"model": 3},
        {"format": ["f32le"]},
        {"high_band": True},  # a codec returns its coded band
        {"high_band": "yes"},
    ],
)
def test_parse_start_rejects(change):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_start(
            {"type": "start", "task": "codec", "sample_rate": 16000, "bitrate": 6000, **change}, DEFAULTS
        )
    assert err.value.code == p.BAD_REQUEST


def test_parse_start_takes_the_enhancer_knobs():
    """`atten_lim_db` (a number >= 0; null, or Python's non-standard `Infinity`: no limit) and `dry`; the
    `ready` of an enhance stream says them (null for no limit: JSON has no infinity), a codec's has none."""
    for text, limit in (("12", 12.0), ("0", 0.0), ("null", None), ("Infinity", None), ("1e400", None)):
        message = p.parse_json(
            f'{{"type": "start", "task": "enhance", "sample_rate": 16000, "atten_lim_db": {text}, "dry": 1}}'
        )
        start = p.parse_start(message, DEFAULTS)
        assert (start.atten_lim_db, start.dry) == (limit, 1.0), text
        ready = json.loads(p.ready_message("s", start, 320, True, 65536, 200.0))
        assert (ready["atten_lim_db"], ready["dry"]) == (limit, 1.0)
    codec = p.parse_start({"type": "start", "task": "codec", "sample_rate": 16000, "bitrate": 6000}, DEFAULTS)
    assert "atten_lim_db" not in json.loads(p.ready_message("s", codec, 640, False, 65536, 200.0))


@pytest.mark.parametrize("text", ["", "{", "[]", '{"type": 1}', "null"])
def test_parse_json_rejects(text):
    with pytest.raises(p.ProtocolError):
        p.parse_json(text)


def test_pcm_formats():
    x = np.array([0.0, 0.5, -1.0, 0.999], np.float32)
    assert np.array_equal(p.decode_pcm(p.encode_pcm(x, "f32le"), "f32le"), x)
    back = p.decode_pcm(p.encode_pcm(x, "s16le"), "s16le")
    assert np.abs(back - x).max() <= 1 / 32768
    assert (
        p.encode_pcm(np.array([2.0, -2.0], np.float32), "s16le") == np.array([32767, -32768], "<i2").tobytes()
    )
    for data, fmt in ((b"\x00", "s16le"), (b"\x00" * 6, "f32le"), (np.float32([np.inf]).tobytes(), "f32le")):
        with pytest.raises(p.ProtocolError):
            p.decode_pcm(data, fmt)


def test_messages_are_json():
    assert json.loads(p.done_message(5, 5)) == {"type": "done", "samples_in": 5, "samples_out": 5}
    assert json.loads(p.error_message(4400, "x")) == {"type": "error", "code": 4400, "message": "x"}


@pytest.mark.parametrize("high_band", [False, True])
@pytest.mark.parametrize("rate", [16000, 8000, 44100, 48000])
def test_wire_audio_keeps_exact_length(rate, high_band):
    """Whatever the client's rate, the output is exactly as long as the input, never longer mid-way."""
    wire = WireAudio(rate, 16000, high_band)
    assert wire.high_band == (high_band and rate > 16000)
    rng = np.random.default_rng(0)
    total_in, total_out = 0, 0
    for _ in range(20):
        n = int(rng.integers(1, 3000))
        model = wire.to_model(rng.standard_normal(n).astype(np.float32) * 0.1)
        total_in += n
        total_out += wire.from_model(model.numpy()).shape[0]
        assert total_out <= total_in
    total_out += wire.from_model(wire.to_model(np.zeros(0, np.float32), last=True).numpy(), last=True).shape[
        0
    ]
    assert total_out == total_in == wire.samples_out


def test_engine_checks_and_groups_bitrates():
    codec = Codec.from_pretrained("speech-16k")
    engine = Engine("speech-16k", codec, 4)
    assert engine.latency_at(48000) == 3 * codec.algorithmic_latency
    with pytest.raises(p.ProtocolError):
        engine.check(p.StartRequest("codec", "speech-16k", 16000, "f32le", 100.0))
    with pytest.raises(p.ProtocolError):
        engine.check(p.StartRequest("enhance", "speech-16k", 16000, "f32le", None))
    a = engine.open(p.StartRequest("codec", "speech-16k", 16000, "f32le", 6000.0))
    b = engine.open(p.StartRequest("codec", "speech-16k", 16000, "f32le", 1500.0))
    assert a[0] != b[0]  # one batcher per number of codebooks
    for key in (a, b):
        engine.push(key, torch.zeros(700))
    assert len(engine.step()) == 2 and engine.ready() == 2
    assert engine.close(a).shape == engine.close(b).shape == (700,)  # nothing pulled yet: all of it


def test_rate_limit():
    limit = RateLimit(10)
    assert sum(limit.allow() for _ in range(100)) == 20  # the burst, then refusals


def _offline_enhance(model, x: torch.Tensor) -> torch.Tensor:
    return model.enhance(x[None, None])[0, 0]


@pytest.mark.parametrize("max_hops", [1, 3, 8])
def test_enhancer_engine_multi_hop_steps_equal_offline(max_hops):
    """Streams pushed in bursts of random sizes and stepped up to ``max_hops`` hops at a time (several
    groups of hop counts in one step, steps of every slot, slots opened and closed meanwhile) give the
    offline output."""
    from audiokit.models.enhancer import Enhancer

    torch.manual_seed(0)
    model = Enhancer.from_config("enhance-16k").eval()
    engine = Engine("enhance-16k", model, 4)
    rng = np.random.default_rng(max_hops)
    request = p.StartRequest("enhance", "enhance-16k", 16000, "f32le", None)
    signals = [torch.randn(int(rng.integers(1, 12000))) * 0.1 for _ in range(6)]
    outputs: list[list[np.ndarray]] = [[] for _ in signals]
    keys, fed, waiting, multi = {}, [0] * len(signals), list(range(len(signals))), False
    while waiting or keys:
        while waiting and len(keys) < 4:  # more streams than slots: slots get reused
            keys[waiting.pop(0)] = engine.open(request)
        shared = int(rng.choice([0, 2500])) if rng.random() < 0.5 else None  # same hops: a full-batch step
        for i, key in list(keys.items()):
            n = shared if shared is not None else int(rng.choice([0, 1, 160, 999, 2500]))
            engine.push(key, signals[i][fed[i] : fed[i] + n])
            fed[i] += min(n, signals[i].shape[0] - fed[i])
        for key, hops, out in engine.step(max_hops):
            assert hops <= max_hops
            multi |= hops > 1
            outputs[next(i for i, k in keys.items() if k == key)].append(out)
        for i, key in list(keys.items()):
            if fed[i] == signals[i].shape[0] and rng.random() < 0.5:
                outputs[i].append(engine.close(key))
                del keys[i]
    assert multi == (max_hops > 1)
    for x, out in zip(signals, outputs, strict=True):
        got = np.concatenate(out)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, _offline_enhance(model, x).numpy(), rtol=0, atol=1e-5)


def test_codec_engine_multi_hop_steps_equal_offline():
    """The codec's batcher stepped several frames at a time on bursty input: offline round trip."""
    codec = Codec.from_pretrained("speech-16k")
    engine = Engine("speech-16k", codec, 3)
    request = p.StartRequest("codec", "speech-16k", 16000, "f32le", 6000.0)
    rng = np.random.default_rng(0)
    signals = [torch.randn(int(rng.integers(1, 6000))) * 0.1 for _ in range(3)]
    keys = [engine.open(request) for _ in signals]
    outputs: list[list[np.ndarray]] = [[] for _ in signals]
    fed, hops_seen = [0] * 3, set()
    while any(f < x.shape[0] for f, x in zip(fed, signals, strict=True)):
        for i, key in enumerate(keys):
            n = int(rng.choice([1, 320, 2000, 3000]))
            engine.push(key, signals[i][fed[i] : fed[i] + n])
            fed[i] += min(n, signals[i].shape[0] - fed[i])
        for key, hops, out in engine.step(4):
            hops_seen.add(hops)
            outputs[keys.index(key)].append(out)
    assert max(hops_seen) > 1
    for i, key in enumerate(keys):
        outputs[i].append(engine.close(key))
        x = signals[i]
        with torch.no_grad():
            expected = codec.decode(codec.encode(x[None, None], 6000.0))[0, 0].numpy()
        got = np.concatenate(outputs[i])
        assert got.shape == x.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
