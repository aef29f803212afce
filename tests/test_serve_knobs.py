"""The enhancer's knobs per stream (`atten_lim_db`, `dry` in `start`): a real server on loopback, streams
with different knobs batched together, each equal to offline enhancement with its own; unknown keys and
bad values refused in one line; `audiokit stream --atten-lim-db/--dry`."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import websockets
from file_support import one_line_error
from file_support import run_cli as run
from serve_support import random_chunks, random_enhancer, running_server, speech

from audiokit import Codec, client
from audiokit.enhancement import enhance_audio
from audiokit.serve import ServerConfig
from audiokit.serve.engines import Engine

ENHANCE = {"type": "start", "task": "enhance", "sample_rate": 16000}
CODEC = {"type": "start", "task": "codec", "sample_rate": 16000, "bitrate": 6000}


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory):
    model, _ = random_enhancer(tmp_path_factory.mktemp("enhancer"))
    return model


@pytest.fixture(scope="module")
def server(enhancer):
    codec = Codec.from_pretrained("speech-16k")
    engines = {
        "enhance-16k": Engine("enhance-16k", enhancer, 8),
        "speech-16k": Engine("speech-16k", codec, 4),
    }
    with running_server(ServerConfig(), engines) as running:
        yield running


def _offline(model, x: np.ndarray, rate: int = 16000, **knobs) -> np.ndarray:
    """`audiokit enhance`'s path on mono ``x`` at ``rate`` Hz (the model's rate: ``Enhancer.enhance``)."""
    if rate == model.sample_rate:
        return model.enhance(torch.from_numpy(x), **knobs).numpy()
    return enhance_audio(model, torch.from_numpy(x)[None], rate, **knobs)[0].numpy()


def test_concurrent_streams_each_run_with_their_own_knobs(server, enhancer):
    """Streams with different attenuation limits and dry shares (and one without knobs, one at 48 kHz
    with the high band), in random message sizes at once, so that they share batched steps: each output
    equals offline enhancement with its own knobs (1e-5), and `ready` says the knobs it runs with."""
    from audiokit import io

    rng = np.random.default_rng(5)
    x48 = io.resample(speech(1.5, 0.6)[:, None], 16000, 48000)[:, 0]
    jobs = [
        (16000, {"atten_lim_db": 6.0}, speech(2.0, 0.2)),
        (16000, {"atten_lim_db": 20.0, "dry": 0.25}, speech(2.0, 0.9)),
        (16000, {}, speech(1.5, 0.4)),
        (48000, {"atten_lim_db": 12.0}, x48),
    ]

    async def run_all():
        return await asyncio.gather(
            *[client.stream(server.ws, random_chunks(x, rng), rate, **knobs) for rate, knobs, x in jobs]
        )

    for (rate, knobs, x), result in zip(jobs, asyncio.run(run_all()), strict=True):
        expected = _offline(enhancer, x, rate, **knobs)
        unlimited = _offline(enhancer, x, rate)
        assert result.audio.shape == x.shape
        assert np.abs(result.audio - expected).max() < 1e-5, knobs
        if knobs:  # the knobs change the output far beyond the tolerance: the check above has teeth
            assert np.abs(expected - unlimited).max() > 1e-2, knobs
        assert (result.ready["atten_lim_db"], result.ready["dry"]) == (
            knobs.get("atten_lim_db"),
            knobs.get("dry", 0.0),
        )


def test_no_limit_is_null_or_left_out(server, enhancer):
    """`atten_lim_db: null` (and the client's `math.inf`, sent as nothing: JSON has no infinity) is no
    limit; `ready` says null."""
    x = speech(0.5, 0.3)
    for limit in (None, float("inf")):
        result = asyncio.run(client.stream(server.ws, [x], 16000, atten_lim_db=limit))
        assert result.ready["atten_lim_db"] is None
        assert np.abs(result.audio - _offline(enhancer, x)).max() < 1e-5
    error, code = asyncio.run(_exchange(server.ws, {**ENHANCE, "atten_lim_db": None, "dry": None}))
    assert error is None and code == 1000


async def _exchange(url: str, start: dict) -> tuple[dict | None, int]:
    """Send ``start``; once ``ready`` comes, 0.1 s of silence and ``end``. The error (or None) and the
    close code."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(start))
        error = None
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if reply["type"] == "error":
                    error = reply
                elif reply["type"] == "ready":
                    await ws.send(np.zeros(1600, "<f4").tobytes())
                    await ws.send(json.dumps({"type": "end"}))
                    with contextlib.suppress(websockets.ConnectionClosed):
                        while True:
                            await asyncio.wait_for(ws.recv(), 10)
        return error, ws.close_code


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (
            {**ENHANCE, "atten_lim_dB": 12},
            "unknown key 'atten_lim_dB' in the start message; did you mean 'atten_lim_db'?",
        ),
        ({**CODEC, "bitrat": 6000}, "unknown key 'bitrat' in the start message; did you mean 'bitrate'?"),
        ({**ENHANCE, "gain": 2}, "unknown key 'gain' in the start message; a start message takes type, "),
        (
            {**ENHANCE, "atten_lim_db": -3},
            "atten_lim_db must be a number of dB >= 0, or null for no limit, got -3",
        ),
        (
            {**ENHANCE, "atten_lim_db": "inf"},
            "atten_lim_db must be a number of dB >= 0, or null for no limit, got 'inf'",
        ),
        (
            {**ENHANCE, "atten_lim_db": True},
            "atten_lim_db must be a number of dB >= 0, or null for no limit, got True",
        ),
        ({**ENHANCE, "dry": 1.5}, "dry must be a number in 0..1 (the share of the input kept), got 1.5"),
        ({**ENHANCE, "dry": "0.5"}, "dry must be a number in 0..1 (the share of the input kept), got '0.5'"),
        ({**CODEC, "atten_lim_db": 12}, "atten_lim_db is for task 'enhance' (a codec has no such knob)"),
        ({**CODEC, "dry": 0}, "dry is for task 'enhance' (a codec has no such knob)"),
    ],
)
def test_unknown_keys_and_bad_knobs_are_refused_in_one_line(server, start, message):
    error, code = asyncio.run(_exchange(server.ws, start))
    assert code == 4400 and error is not None and error["code"] == 4400, (error, code)
    assert error["message"].startswith(message) and "\n" not in error["message"], error["message"]


def test_known_keys_are_accepted(server):
    """Every key a start message may hold, `null` where a client leaves a value to the server (a client
    that always sends every key), opens a stream; a bitrate with enhance is ignored, as it always was (a
    client may reuse a codec's start message)."""
    for start in (
        {**ENHANCE, "model": "enhance-16k", "format": "s16le", "high_band": False, "bitrate": None},
        {**CODEC, "task": "enhance", "model": "enhance-16k"},
        {**ENHANCE, "model": None, "format": "f32le", "high_band": True, "atten_lim_db": 3, "dry": 0.5},
        {**CODEC, "model": "speech-16k", "format": "f32le", "high_band": False, "atten_lim_db": None},
    ):
        error, code = asyncio.run(_exchange(server.ws, start))
        assert (error, code) == (None, 1000), start


def test_stream_cli_takes_the_knobs(capsys, server, enhancer, tmp_path):
    """`audiokit stream --atten-lim-db DB --dry D`: the server runs the stream with them (its output that
    of `audiokit enhance` with them, up to the 16-bit file's rounding); `inf` is no limit; the knobs are
    refused for a codec before connecting, and values out of range by the parser (exit 2)."""
    x = speech(1.0, 0.5)
    source = tmp_path / "in.wav"
    sf.write(source, x, 16000, subtype="FLOAT")
    for options, knobs in (
        (("--atten-lim-db", "9", "--dry", "0.1"), {"atten_lim_db": 9.0, "dry": 0.1}),
        (("--atten-lim-db", "inf"), {}),
    ):
        target = tmp_path / "out.wav"
        code, out, err = run(capsys, "stream", "--json", "-f", source, target, "--url", server.ws, *options)
        assert code == 0, err
        ready = json.loads(out)["ready"]
        assert (ready["atten_lim_db"], ready["dry"]) == (knobs.get("atten_lim_db"), knobs.get("dry", 0.0))
        back, _ = sf.read(target, dtype="float32")
        assert np.abs(back - _offline(enhancer, x, **knobs)).max() <= 1.05 / 32768
    for option in ("--atten-lim-db", "--dry"):
        code, out, err = run(capsys, "stream", source, tmp_path / "c.wav", "--task", "codec", option, "0.5")
        assert code == 1 and not out and not (tmp_path / "c.wav").exists()
        one_line_error(err, f"{option}: only for --task enhance (not codec)")
    for option, value, what in (
        ("--atten-lim-db", "-1", "an attenuation limit in dB >= 0"),
        ("--dry", "2", "a wet/dry mix in [0, 1] (0: fully enhanced)"),
    ):
        code, out, err = run(capsys, "stream", source, tmp_path / "c.wav", option, value)
        assert code == 2 and not out
        one_line_error(err, f"audiokit stream: error: argument {option}: {value} is not {what}")
