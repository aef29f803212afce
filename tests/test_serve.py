"""End to end: a real uvicorn server on a loopback port, real WebSocket clients, output == offline."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest
import torch
from serve_support import random_chunks, random_enhancer, running_server, speech

from audiokit import Codec, client
from audiokit.serve import ServerConfig, load_engines


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_pretrained("speech-16k")


@pytest.fixture(scope="module")
def server(codec, tmp_path_factory):
    """speech-16k and a random enhancer (served from its .safetensors path, as `-m PATH` does)."""
    enhancer, path = random_enhancer(tmp_path_factory.mktemp("enhancer"))
    config = ServerConfig(models=["speech-16k", str(path)], max_streams_per_client=64)
    with running_server(config, load_engines(config)) as running:
        running.enhancer = enhancer
        yield running


def _offline_codec(codec: Codec, x: np.ndarray, bitrate: float) -> np.ndarray:
    with torch.no_grad():
        return codec.decode(codec.encode(torch.from_numpy(x)[None, None], bitrate))[0, 0].numpy()


def _offline_enhance(model, x: np.ndarray) -> np.ndarray:
    return model.enhance(torch.from_numpy(x)[None, None])[0, 0].numpy()


def test_concurrent_streams_equal_offline(server, codec):
    """Codec round trips at two bitrates and enhancer streams at once, random message sizes: each output
    equals offline processing of its input (1e-5, float32 PCM) with exactly the input's length."""
    rng = np.random.default_rng(0)
    jobs = [
        ("codec", 6000.0, speech(2.0, 0.0)),
        ("codec", 1500.0, speech(1.5, 0.7)),
        ("codec", 6000.0, speech(0.01, 0.3)),  # shorter than one frame
        ("enhance", None, speech(2.0, 0.2)),
        ("enhance", None, speech(1.0, 1.1)),
    ]

    async def run_all():
        return await asyncio.gather(
            *[
                client.stream(server.ws, random_chunks(x, rng), 16000, task, bitrate=bitrate)
                for task, bitrate, x in jobs
            ]
        )

    for (task, bitrate, x), result in zip(jobs, asyncio.run(run_all()), strict=True):
        expected = (
            _offline_codec(codec, x, bitrate) if task == "codec" else _offline_enhance(server.enhancer, x)
        )
        assert result.audio.shape == x.shape
        assert np.abs(result.audio - expected).max() < 1e-5, task
        assert result.done == {"type": "done", "samples_in": x.shape[0], "samples_out": x.shape[0]}
        assert result.ready["latency_samples"] == (640 if task == "codec" else 320)


def test_single_samples_and_s16le(server, codec):
    """One-sample messages and 16-bit PCM: exact length, offline output up to 16-bit rounding."""
    x = np.round(speech(0.1, 0.5) * 32768) / 32768
    chunks = list(x[:250, None]) + [x[250:]]  # 250 one-sample messages: within the default rate's burst
    result = asyncio.run(client.stream(server.ws, chunks, 16000, "codec", fmt="s16le", bitrate=3000))
    expected = _offline_codec(codec, x.astype(np.float32), 3000)
    assert result.audio.shape == x.shape
    assert np.abs(result.audio - expected).max() <= 1.5 / 32768


def test_other_sample_rate_is_resampled(server):
    """44.1 kHz in: output at 44.1 kHz, exactly as long, close to the enhancer's output at 16 kHz."""
    from audiokit import io

    x16 = speech(1.0, 0.3)
    x = io.resample(x16[:, None], 16000, 44100)[:, 0]
    result = asyncio.run(
        client.stream(server.ws, random_chunks(x, np.random.default_rng(1)), 44100, "enhance")
    )
    assert result.audio.shape == x.shape
    expected = io.resample(_offline_enhance(server.enhancer, x16)[:, None], 16000, 44100)[: x.shape[0], 0]
    corr = np.corrcoef(result.audio[2000:-2000], expected[2000:-2000])[0, 1]
    assert corr > 0.95


def _wideband(rate: int, seconds: float) -> np.ndarray:
    """Speech at ``rate`` with a noise band at 9-15 kHz that follows its 4-7.5 kHz envelope."""
    from scipy import signal

    from audiokit import io

    x = io.resample(speech(seconds, 0.3)[:, None], 16000, rate)[:, 0]
    b, a = signal.butter(4, [4000, 7500], "bandpass", fs=rate)
    envelope = np.abs(signal.hilbert(signal.lfilter(b, a, x)))
    b, a = signal.butter(6, [9000, 15000], "bandpass", fs=rate)
    high = signal.lfilter(b, a, np.random.default_rng(2).normal(0, 1, x.size)) * envelope
    return (x + high).astype(np.float32)


def _high_band_energy(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2  # windowed: no edge leakage
    return float(spectrum[np.fft.rfftfreq(audio.size, 1 / rate) > 9000].sum())


@pytest.mark.parametrize("rate", [48000, 44100])
def test_enhance_keeps_the_high_band_as_files_do(server, rate):
    """Above the model's rate the output keeps the input's band above 8 kHz (on by default): equal to
    `audiokit enhance`'s in-memory path on the whole input, with the high band's 20 ms look-ahead in
    `latency_samples`; `high_band: false` returns the model's band only, 20 ms sooner."""
    from audiokit.enhancement import enhance_audio

    x = _wideband(rate, 1.5)
    result = asyncio.run(
        client.stream(server.ws, random_chunks(x, np.random.default_rng(3)), rate, "enhance")
    )
    expected = enhance_audio(server.enhancer, torch.from_numpy(x)[None], rate)[0].numpy()
    assert result.audio.shape == x.shape
    assert np.abs(result.audio - expected).max() < 1e-6
    assert result.ready["high_band"] is True
    assert result.ready["latency_samples"] == round(0.04 * rate)  # 20 ms model + 20 ms look-ahead
    narrow = asyncio.run(client.stream(server.ws, [x], rate, "enhance", high_band=False))
    assert narrow.ready["high_band"] is False and narrow.ready["latency_samples"] == round(0.02 * rate)
    assert _high_band_energy(narrow.audio, rate) < 1e-6 * _high_band_energy(x, rate)
    assert _high_band_energy(result.audio, rate) > 0.01 * _high_band_energy(x, rate)


def test_healthz_and_metrics(server):
    asyncio.run(client.stream(server.ws, [speech(0.2)], 16000, "enhance"))
    health = json.loads(urllib.request.urlopen(f"{server.http}/healthz").read())
    assert health["status"] == "ok"
    # a model served from a path is named by it, not after the config it shares with a shipped model
    assert {m["name"]: m["task"] for m in health["models"]} == {
        "speech-16k": "codec",
        "enhancer": "enhance",  # enhancer.safetensors
    }
    assert health["live_streams"] == 0
    head = urllib.request.urlopen(urllib.request.Request(f"{server.http}/healthz", method="HEAD"))
    assert head.status == 200 and head.read() == b""
    codec = next(m for m in health["models"] if m["task"] == "codec")
    assert codec["bitrates"][:2] == [500, 1000] and all(type(b) is int for b in codec["bitrates"])  # bits/s
    text = urllib.request.urlopen(f"{server.http}/metrics").read().decode()
    for name in (
        "audiokit_streams_live",
        "audiokit_stream_slots_used",
        "audiokit_stream_slots_total 64.0",
        "audiokit_step_seconds_bucket",
        "audiokit_step_batch_size_bucket",
        "audiokit_step_hops_bucket",
        "audiokit_samples_in_total",
        "audiokit_samples_out_total",
        "audiokit_late_steps_total",
        'audiokit_closes_total{code="1000"}',
    ):
        assert name in text, name
    page = urllib.request.urlopen(f"{server.http}/").read().decode()
    assert '<script src="static/app.js">' in page
    for path, kind in (("/", "text/html"), ("/metrics", "text/plain"), ("/static/app.js", "text/javascript")):
        head = urllib.request.urlopen(urllib.request.Request(f"{server.http}{path}", method="HEAD"))
        assert head.status == 200 and head.read() == b"", path
        assert head.headers["content-type"].startswith(kind), path


def _hops_observed(text: str, model: str) -> tuple[float, float]:
    """``(steps that moved one hop at most, all steps)`` of ``model`` in a /metrics text."""
    one = total = 0.0
    for line in text.splitlines():
        if line.startswith("audiokit_step_hops_bucket") and f'model="{model}"' in line and 'le="1.0"' in line:
            one = float(line.split()[-1])
        if line.startswith("audiokit_step_hops_count") and f'model="{model}"' in line:
            total = float(line.split()[-1])
    return one, total


def test_bursts_catch_up_in_multi_hop_steps_equal_offline(server, codec):
    """Streams fed in bursts (a second of audio in one message, then pauses and small pieces) advance
    several hops per batched step, and each output still equals offline processing, exact length."""
    rng = np.random.default_rng(2)
    jobs = [("codec", 6000.0, speech(2.5, 0.1)), ("enhance", None, speech(2.5, 0.4))] * 2

    async def bursts(x: np.ndarray):
        i = 0
        while i < x.shape[0]:
            n = int(rng.choice([16000, 8000, 1, 333, 4000]))
            yield x[i : i + n]
            i += n
            await asyncio.sleep(float(rng.uniform(0, 0.05)))

    async def run_all():
        return await asyncio.gather(
            *[client.stream(server.ws, bursts(x), 16000, task, bitrate=bitrate) for task, bitrate, x in jobs]
        )

    for (task, bitrate, x), result in zip(jobs, asyncio.run(run_all()), strict=True):
        expected = (
            _offline_codec(codec, x, bitrate) if task == "codec" else _offline_enhance(server.enhancer, x)
        )
        assert result.audio.shape == x.shape
        assert np.abs(result.audio - expected).max() < 1e-5, task
    text = urllib.request.urlopen(f"{server.http}/metrics").read().decode()
    for model in ("speech-16k", "enhancer"):
        one, total = _hops_observed(text, model)
        assert total > one, f"{model}: no step moved more than one hop"
