"""Streaming steps compiled ahead of time (AOTInductor): equal to offline, cached, and a clean fallback."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES, TINY_SPEECH_CODEC, run_stream

import audiokit.io as aio
from audiokit.models import Codec
from audiokit.models.bwe import BandwidthExtender
from audiokit.models.enhancer import Enhancer
from audiokit.nn.resample import Upsampler
from audiokit.nn.spectral import CausalInverseSpectrum
from audiokit.serve.engines import Engine
from audiokit.serve.protocol import StartRequest
from audiokit.streaming import compiled


def _perturbed(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():  # far from the initial state, so the checks see the network act
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_codec() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def test_codec_roundtrip_equals_offline(tiny_codec):
    x = torch.randn(2, 1, 16000, generator=torch.Generator().manual_seed(1)) * 0.3
    session = tiny_codec.stream(2, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    streamed = run_stream(session, x, [320, 320, 960, 320, 17])  # one frame compiled, others eager
    with torch.inference_mode():
        codes = tiny_codec.encode(x)
        offline = tiny_codec.decode(codes)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)
    encoder = tiny_codec.stream(2, "encode", compile="aoti")
    streamed_codes = run_stream(encoder, x, [320])
    agree = (streamed_codes == codes.codes).float().mean()
    assert agree > 0.999  # near-ties may round the other way (the module docstring)


@pytest.mark.slow
def test_autotuned_build_equals_offline(tiny_codec, monkeypatch):
    """The production build (products timed at build time; make test builds without, conftest): ~85 s."""
    monkeypatch.setenv("AUDIOKIT_AOTI_AUTOTUNE", "1")
    assert compiled.autotuned()
    x = torch.randn(2, 1, 6400, generator=torch.Generator().manual_seed(4)) * 0.3
    session = tiny_codec.stream(2, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    with torch.inference_mode():
        offline = tiny_codec.decode(tiny_codec.encode(x))
    torch.testing.assert_close(run_stream(session, x, [320]), offline, atol=1e-5, rtol=0)


def test_enhancer_with_every_analysis_equals_offline():
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16, "pitch": True}
    config["noise_floor_rise"] = (5.0, 20.0)
    model = _perturbed(Enhancer.from_config("enhance-16k", **config), 0.2)
    x = torch.randn(3, 1, 8000, generator=torch.Generator().manual_seed(2)) * 0.3
    session = model.stream(3, compile="aoti", atten_lim_db=12.0)
    assert session.compiled, compiled.unavailable_reason()
    # libraries for one hop and for two: the pushes below step 1, 2 and 4 hops at a time
    assert isinstance(session._step.one, compiled.AheadOfTimeStep), compiled.unavailable_reason()
    assert isinstance(session._step.two, compiled.AheadOfTimeStep), compiled.unavailable_reason()
    streamed = run_stream(session, x, [320, 320, 160, 640, 33])
    offline = model.enhance(x, atten_lim_db=12.0)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)
    # the trace left the model's caches alone: eager steps still run (no traced tensors in them)
    torch.testing.assert_close(
        run_stream(model.stream(3, atten_lim_db=12.0), x, [320]), offline, atol=1e-5, rtol=0
    )


@pytest.mark.slow  # four libraries to build: minutes on a 2-core machine
@pytest.mark.parametrize("band_features", ["diffstft", "adaptive"])
def test_enhancer_with_a_learnable_front_end_equals_offline(band_features):
    """The learnt window (``diffstft``) and the filterbank's state (``adaptive``) trace into the compiled
    steps; rows with different digital silence step frame by frame there."""
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16}
    model = _perturbed(Enhancer.from_config("enhance-16k", band_features=band_features, **config), 0.05)
    x = torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(2)) * 0.3
    x[1, :, 2000:4000] = 0.0
    session = model.stream(2, compile="aoti")
    assert isinstance(session._step.one, compiled.AheadOfTimeStep), compiled.unavailable_reason()
    assert isinstance(session._step.two, compiled.AheadOfTimeStep), compiled.unavailable_reason()
    streamed = run_stream(session, x, [320, 160, 640, 33])
    torch.testing.assert_close(streamed, model.enhance(x), atol=1e-5, rtol=0)


def test_bandwidth_extender_equals_eager():
    model = _perturbed(BandwidthExtender.from_config("bwe-8to16", hidden_dim=16, lstm_layers=1), 0.1)
    x = torch.randn(2, 1, 6400, generator=torch.Generator().manual_seed(3)) * 0.3
    session = model.stream(2, compile="aoti", edge_hz=4000.0)
    assert session.compiled, compiled.unavailable_reason()
    streamed = run_stream(session, x, [320])
    eager = run_stream(model.stream(2, edge_hz=4000.0), x, [320])
    torch.testing.assert_close(streamed, eager, atol=1e-5, rtol=0)
    assert float(streamed.abs().max()) > 0.01


@pytest.mark.parametrize("compile", [None, "aoti"])
@pytest.mark.parametrize("input_rate", [8000, 16000])
def test_bandwidth_extender_sessions_in_and_out_of_step_equal_offline(compile, input_rate):
    """Whole hops go straight through the (fused, for 8 kHz) step once a session is in step; a reset
    row puts the rows out of step, and the buffered path takes over."""
    model = _perturbed(BandwidthExtender.from_config("bwe-8to16", hidden_dim=16, lstm_layers=1), 0.1)
    generator = torch.Generator().manual_seed(4)
    a, b, fresh = (torch.randn(1, 1, input_rate // 2, generator=generator) * 0.3 for _ in range(3))
    hop = model.hop_length * input_rate // model.sample_rate  # one hop's input samples
    session = model.stream(2, input_rate=input_rate, compile=compile, edge_hz=4000.0)
    assert session.compiled or compile is None, compiled.unavailable_reason()
    both = torch.cat([a, b])
    outputs = [session.push(both[..., i : i + 2 * hop]) for i in range(0, 10 * hop, 2 * hop)]
    session.reset([1])  # row 1 starts `fresh` with the next push
    rest = torch.cat([a[..., 10 * hop :], fresh[..., : a.shape[-1] - 10 * hop]])
    outputs += [session.push(rest[..., i : i + 2 * hop]) for i in range(0, rest.shape[-1], 2 * hop)]
    tail = session.flush()
    kept = torch.cat([out[0] for out in outputs] + [tail[0, ..., : session.lengths[0]]], -1)
    restarted = torch.cat([out[1] for out in outputs[5:]] + [tail[1, ..., : session.lengths[1]]], -1)
    edge = 4000.0 if input_rate == model.sample_rate else None
    for got, signal in ((kept, a), (restarted, fresh[..., : rest.shape[-1]])):
        want = model.extend(signal, input_rate) if edge is None else model(signal, edge)
        torch.testing.assert_close(got[None], want, atol=1e-5, rtol=0)
    assert float(kept.abs().max()) > 0.01


def test_the_products_compiled_steps_use_equal_the_eager_operations(monkeypatch):
    """Traced for compilation, the inverse DFT and the upsampler's filter are matrix products (no FFT,
    complex tensor or library conv call): the same values."""
    generator = torch.Generator().manual_seed(5)
    synthesis = CausalInverseSpectrum(320, 160)
    real, imag = torch.randn(2, 2, 1, 161, 3, generator=generator)
    upsampler = Upsampler(2)
    x = torch.randn(3, 1, 200, generator=generator)
    eager_audio = synthesis.step_parts(real, imag, synthesis.init_state(2, None, torch.float32))
    eager_up = upsampler(x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    traced_audio = synthesis.step_parts(real, imag, synthesis.init_state(2, None, torch.float32))
    torch.testing.assert_close(traced_audio, eager_audio, atol=1e-6, rtol=0)
    torch.testing.assert_close(upsampler(x), eager_up, atol=1e-6, rtol=0)
    assert float(eager_audio.abs().max()) > 0.1


def test_cached_and_falls_back_without_a_compiler(tiny_codec, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOKIT_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    session = tiny_codec.stream(1, "decode", compile="aoti")
    assert session.compiled == {"encoder": False, "decoder": False}
    assert "no C++ compiler" in compiled.unavailable_reason()
    codes = tiny_codec.encode(torch.randn(1, 1, 3200) * 0.3)
    with torch.inference_mode():
        offline = tiny_codec.decode(codes)
    torch.testing.assert_close(run_stream(session, codes.codes, [1])[..., :3200], offline, atol=1e-5, rtol=0)
    monkeypatch.delenv("CXX")
    compiled._failures.clear()
    built = tiny_codec.stream(1, "decode", compile="aoti")
    assert built.compiled["decoder"]
    libraries = list(tmp_path.rglob("*.pt2"))
    assert len(libraries) == 1
    built_as = libraries[0].stat().st_ino  # a build writes a new file (temp file + rename)
    os.utime(libraries[0], ns=(0, 0))
    assert tiny_codec.stream(1, "decode", compile="aoti").compiled["decoder"]  # loaded, not rebuilt
    assert libraries[0].stat().st_ino == built_as and list(tmp_path.rglob("*.pt2")) == libraries
    assert libraries[0].stat().st_mtime_ns > 0  # marked as used: pruning goes by last use


def test_sessions_compile_under_forced_cpp_kernels(tiny_codec, tmp_path, monkeypatch):
    """AUDIOKIT_OPS=cpp and compile="aoti": the libraries are built, traced on the torch ops (the C++
    kernels are opaque to torch.export: the build failed with 'Cannot access data pointer of Tensor',
    so the session ran eagerly), and streaming equals offline within 1e-5."""
    from audiokit.ops import cpp

    if cpp.load() is None:  # loaded from the usual cache before it moves below
        pytest.skip(f"no C++ kernels: {cpp.unavailable_reason()}")
    monkeypatch.setenv("AUDIOKIT_KERNELS_CACHE", str(tmp_path))  # built now, not loaded
    monkeypatch.setenv("AUDIOKIT_OPS", "cpp")
    session = tiny_codec.stream(1, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    x = torch.randn(1, 1, 6400, generator=torch.Generator().manual_seed(3)) * 0.3
    streamed = run_stream(session, x, [320, 960, 320])
    with torch.inference_mode():
        offline = tiny_codec.decode(tiny_codec.encode(x))
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_libraries_are_keyed_by_the_cpus_vector_instructions(tiny_codec, monkeypatch):
    """A library built for AVX-512 must not be loaded on an AVX2-only CPU that shares the cache."""
    state, chunk = tiny_codec.decoder.init_state(1, torch.device("cpu"), torch.float32), torch.zeros(1, 3, 1)
    keys = []
    for capability in ("AVX2", "AVX512"):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        keys.append(compiled._cache_key(tiny_codec, tiny_codec.decoder.step_t, state, chunk, {}))
    assert keys[0] != keys[1]


def test_the_cache_keeps_the_latest_libraries(tmp_path):
    for i in range(5):
        (tmp_path / f"m-{i}.pt2").write_bytes(b"x")
        os.utime(tmp_path / f"m-{i}.pt2", ns=(i * 10**9, i * 10**9))
    compiled._prune(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("*.pt2")) == ["m-3.pt2", "m-4.pt2"]


def test_pruning_skips_files_another_process_removed(tmp_path, monkeypatch):
    """Processes share the cache: a library (or a build's temporary) listed, then removed or renamed by
    another process before its time is read, made the pruning raise, and so a library just built was
    reported unavailable and its session ran eagerly."""
    for i in range(3):
        (tmp_path / f"m-{i}.pt2").write_bytes(b"x")
        os.utime(tmp_path / f"m-{i}.pt2", ns=(i * 10**9, i * 10**9))
    listed = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [*listed(self, pattern), self / "tmpgone.pt2"])
    compiled._prune(tmp_path, 2)
    assert sorted(p.name for p in listed(tmp_path, "*.pt2")) == ["m-1.pt2", "m-2.pt2"]


def test_shipped_codec_roundtrip_equals_offline():
    codec = Codec.from_pretrained("speech-16k").eval()
    x = torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(4)) * 0.3
    session = codec.stream(1, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    streamed = run_stream(session, x, [320])
    with torch.inference_mode():
        offline = codec.decode(codec.encode(x))
    assert streamed.shape == offline.shape == x.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_shipped_enhancer_and_extender_sessions_equal_offline():
    """The shipped weights on real audio with a gap of digital silence (the frames the enhancer's
    states skip), compiled sessions pushed in whole hops (the libraries), in other sizes (the eager
    fallback) and across a reset, against offline."""
    noisy = aio.load(SAMPLES / "noisy_speech_fr_16k_snr5.flac", sample_rate=16000, channels=1)[0][
        None, :, :24000
    ]
    noisy = torch.cat([noisy[..., :12000], torch.zeros(1, 1, 2000), noisy[..., 12000:]], -1)
    narrow = aio.load(SAMPLES / "speech_fr_8k_a.wav", sample_rate=8000, channels=1)[0][None, :, :12000]
    enhancer = Enhancer.from_pretrained("enhance-16k").eval()
    extender = BandwidthExtender.from_pretrained("bwe-8to16").eval()
    cases = (
        (enhancer.stream(1, compile="aoti"), noisy, [320, 160, 320, 480, 77], enhancer.enhance(noisy)),
        (
            extender.stream(1, input_rate=8000, compile="aoti"),
            narrow,
            [160, 80, 160, 240, 51],
            extender.extend(narrow[0], 8000)[None],
        ),
    )
    for session, x, chunks, offline in cases:
        assert session.compiled, compiled.unavailable_reason()
        session.push(x[..., :1000])
        session.reset(0)  # a restarted stream: the same output as a fresh one
        streamed = run_stream(session, x, chunks)
        assert streamed.shape == offline.shape
        torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)
        assert float(offline.abs().max()) > 0.05


def test_served_enhancer_engine_compiled_equals_eager():
    """``audiokit serve --compile aoti``: the engine builds its library at start-up, and every stream
    (steps of one, two and four hops, batched with others, flushed) gets what the eager engine gives, and
    offline enhancement with its knobs: streams with knobs of their own step eagerly beside the compiled
    step of the others."""
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16}
    model = _perturbed(Enhancer.from_config("enhance-16k", **config), 0.2)
    request = StartRequest(task="enhance", model="enhance-16k", sample_rate=16000, format="f32le")
    knobs = [{}, {"atten_lim_db": 6.0}, {}, {"atten_lim_db": 12.0, "dry": 0.3}]
    generator = torch.Generator().manual_seed(3)
    signals = [torch.randn(n, generator=generator) * 0.3 for n in (4000, 2345, 640, 3000)]
    outputs = {}
    for mode in (None, "aoti"):
        engine = Engine("enhance-16k", model, capacity=4, compile=mode)
        assert engine.compiled == (mode == "aoti"), compiled.unavailable_reason()
        streams = [engine.open(dataclasses.replace(request, **k)) for k in knobs]
        got: list[list] = [[] for _ in signals]
        for tick in range(25):  # messages of 20, 10, 40 and 30 ms, stepped up to 4 hops at once
            for stream, x, size in zip(streams, signals, (320, 160, 640, 480), strict=True):
                if tick * size < x.shape[0]:
                    engine.push(stream, x[tick * size : (tick + 1) * size])
            for stream, _, out in engine.step(max_hops=4):
                got[streams.index(stream)].append(out)
        rests = engine.close_many(streams)
        outputs[mode] = [np.concatenate([*g, r]) for g, r in zip(got, rests, strict=True)]
    for eager, fused, x, k in zip(outputs[None], outputs["aoti"], signals, knobs, strict=True):
        assert eager.shape == fused.shape == (x.shape[0],)
        np.testing.assert_allclose(fused, eager, atol=1e-5, rtol=0)
        np.testing.assert_allclose(fused, model.enhance(x, **k).numpy(), atol=1e-5, rtol=0)
