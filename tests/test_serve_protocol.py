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
    ],
)
def test_parse_start_rejects(change):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_start(
            {"type": "start", "task": "codec", "sample_rate": 16000, "bitrate": 6000, **change}, DEFAULTS
        )
    assert err.value.code == p.BAD_REQUEST


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


@pytest.mark.parametrize("rate", [16000, 8000, 44100, 48000])
def test_wire_audio_keeps_exact_length(rate):
    """Whatever the client's rate, the output is exactly as long as the input, never longer mid-way."""
    wire = WireAudio(rate, 16000)
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
