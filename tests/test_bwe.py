"""Bandwidth extension: the upsampler, what the model keeps, streaming == offline, degradations, recipe."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiokit import io
from audiokit.errors import UsageError
from audiokit.models.bwe import NARROWBAND_EDGE_HZ, BandwidthExtender, BandwidthExtenderConfig
from audiokit.nn.resample import Upsampler, lowpass_taps
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.data import read_clips
from audiokit.train.narrowband import DegradationConfig, NarrowbandDataset, a_law, mu_law, upsample_2x
from audiokit.train.recipe import DataConfig, load_recipe
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "samples" / "speech_fr_16k_a.flac"


@pytest.fixture(scope="module")
def model() -> BandwidthExtender:
    torch.manual_seed(0)
    m = BandwidthExtender.from_config("bwe-8to16").eval()
    with torch.no_grad():  # far from the initial state, so the checks see the network act
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def test_upsampler_matches_numpy_and_scipy():
    x = np.random.default_rng(0).standard_normal((1, 1, 400)).astype(np.float32)
    up = Upsampler(2)(torch.from_numpy(x))[0, 0].numpy()
    stuffed = np.zeros(800)
    stuffed[::2] = x[0, 0]
    reference = np.convolve(stuffed, lowpass_taps(2))[:800]
    np.testing.assert_allclose(up, reference, atol=1e-5)
    for factor in (2, 3):  # streamed in uneven chunks, the step is the zero-stuffed filter too
        upsampler, signal = Upsampler(factor, taps_per_phase=16), torch.from_numpy(x)
        state = upsampler.init_state(1, signal.device, signal.dtype)
        stepped = torch.cat([upsampler.step(c, state) for c in signal.split([137, 1, 0, 262], -1)], -1)
        stuffed = np.zeros(400 * factor)
        stuffed[::factor] = x[0, 0]
        reference = np.convolve(stuffed, lowpass_taps(factor, 16))[: 400 * factor]
        np.testing.assert_allclose(stepped[0, 0].numpy(), reference, atol=1e-5)
        torch.testing.assert_close(upsampler(signal), stepped, atol=1e-6, rtol=0)
    # a tone well inside the band comes through at unit gain and without images
    t = np.arange(4000) / 8000
    tone = np.sin(2 * np.pi * 1000 * t)
    y = upsample_2x(tone[None], 32)[0, 500:-500]
    expected = np.sin(2 * np.pi * 1000 * (np.arange(8000) / 16000))[500:-500]
    np.testing.assert_allclose(y, expected, atol=2e-3)
    _, power = scipy.signal.periodogram(upsample_2x(tone[None], 32)[0], fs=16000)
    assert power[4400:].sum() < 1e-6 * power.sum()  # the 7 kHz image is gone


def test_the_upsampling_fir_is_configurable_and_training_uses_the_models(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    sharp = BandwidthExtenderConfig(
        name="sharp", sample_rate=16000, upsample_taps_per_phase=64, upsample_cutoff=0.97
    )
    model = BandwidthExtender(sharp)
    assert model.algorithmic_latency / model.sample_rate <= 0.020  # 63 + 256, to whole 8 kHz samples: 320
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 3600 * t)[None]
    offline = model.upsample(torch.from_numpy(tone).float()[None])[0].numpy()
    np.testing.assert_allclose(offline, upsample_2x(tone, 64, 0.97), atol=1e-5)
    expected = np.sin(2 * np.pi * 3600 * np.arange(16000) / 16000)

    def gain_db(y: np.ndarray) -> float:
        return 10 * np.log10(np.mean(y[0, 1000:-1000] ** 2) / np.mean(expected[1000:-1000] ** 2))

    assert abs(gain_db(upsample_2x(tone, 64, 0.97))) < 0.2  # 3.6 kHz kept by the sharp FIR
    assert gain_db(upsample_2x(tone, 32)) < -2.0  # and cut by the default one
    sharp_options = ["model.options.upsample_taps_per_phase=64", "model.options.upsample_cutoff=0.97"]
    recipe = load_recipe(ROOT / "recipes" / "bwe_8to16_tiny.yaml", sharp_options)
    trained = Trainer(recipe, tmp_path, quiet=True).dataset
    assert (trained.taps_per_phase, trained.cutoff) == (64, 0.97)


def test_keeps_the_known_band_and_passes_wideband(model):
    wav, _ = io.load(SPEECH, sample_rate=16000, channels=1)
    with torch.no_grad():
        torch.testing.assert_close(model(wav[None], 8000.0), wav[None], atol=1e-5, rtol=0)
        x8 = torch.from_numpy(io.resample(wav.numpy().T, 16000, 8000).T.copy())
        out = model.extend(x8, 8000)
        up = model.upsample(x8[None])[0]
    assert out.shape == (1, 2 * x8.shape[-1])
    window = torch.hann_window(256)
    spec_in = torch.stft(up[0], 256, 128, window=window, return_complex=True)
    spec_out = torch.stft(out[0], 256, 128, window=window, return_complex=True)
    known = int(NARROWBAND_EDGE_HZ * 256 / 16000) - 4  # below the crossfade
    error = (spec_out[:known] - spec_in[:known]).abs().square().sum() / spec_in[:known].abs().square().sum()
    assert float(error) < 1e-4  # -40 dB: only window leakage of the new band
    added = spec_out[known + 8 :].abs().square().sum() / spec_out.abs().square().sum()
    assert float(added) > 1e-4  # and it did add a high band


@settings(max_examples=12, deadline=None)
@given(
    length=st.integers(1, 2500),
    chunks=st.lists(st.integers(0, 600), max_size=8),
    seed=st.integers(0, 2**16),
    edge=st.sampled_from([NARROWBAND_EDGE_HZ, 3800.0, 5500.0, 8000.0]),
)
def test_streaming_equals_offline(model, length, chunks, seed, edge):
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    offline = model(x, edge)
    session = model.stream(2, edge_hz=edge)
    outs, pos = [], 0
    for size in chunks:
        outs.append(session.push(x[..., pos : pos + size]))
        pos += size
    outs += [session.push(x[..., pos:]), session.flush()]
    torch.testing.assert_close(torch.cat(outs, -1), offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("input_rate", [8000, 16000])
def test_state_dict_moves_live_streams_to_another_session(model, input_rate):
    """A session's ``state_dict`` (at 8 kHz: the upsampler's filter and queue too), saved and read back
    with ``weights_only``, continues its streams in a fresh session exactly as offline."""
    x = torch.randn(1, 2, 3001, generator=torch.Generator().manual_seed(1)) * 0.3
    options = {"input_rate": 8000} if input_rate == 8000 else {"edge_hz": NARROWBAND_EDGE_HZ}
    first = model.stream(1, channels=2, **options)
    head = first.push(x[..., :1111])
    buffer = BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = model.stream(1, channels=2, **options)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    out = torch.cat([head, second.push(x[..., 1111:2000]), second.push(x[..., 2000:]), second.flush()], -1)
    expected = model.extend(x, input_rate, edge_hz=NARROWBAND_EDGE_HZ)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    other = {"input_rate": 8000} if input_rate == 16000 else {"input_rate": 8000, "edge_hz": 3000.0}
    with pytest.raises(UsageError, match="does not fit"):
        model.stream(1, channels=2, **other).load_state_dict(first.state_dict())


def test_lengths_silence_and_latency(model):
    for length in (1, 127, 8001):
        silent = model.extend(torch.zeros(1, length), 8000)
        assert silent.shape == (1, 2 * length) and float(silent.abs().max()) == 0.0
    assert model.extend(torch.zeros(2, 333), 16000).shape == (2, 333)
    assert model.algorithmic_latency / model.sample_rate <= 0.020
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    with pytest.raises(UsageError, match="input_rate must be 8000 or 16000 Hz, got 11025"):
        model.extend(torch.zeros(1, 10), 11025)


def test_g711_round_trips():
    x = np.linspace(-1, 1, 20001)
    for codec in (mu_law, a_law):
        y = codec(x)
        snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
        assert 35 < snr < 45  # G.711's ~38 dB
        assert len(np.unique(y)) <= 256


def test_narrowband_items():
    clips = read_clips(str(ROOT / "samples"), "speech_fr_16k_*")
    data = DataConfig(segment_seconds=0.5, batch_size=6, eq_probability=0.0)
    telephone = NarrowbandDataset(
        clips,
        16000,
        1,
        data,
        seed=0,
        degradation=DegradationConfig(telephone_probability=1.0, noise_probability=0.0),
    )
    batch = telephone[3]
    assert torch.equal(batch["input"], telephone[3]["input"])  # a pure function of the step
    assert torch.all(batch["edge_hz"] == NARROWBAND_EDGE_HZ)
    for x in batch["input"]:
        if float(x.square().sum()) > 0:
            _, power = scipy.signal.periodogram(x[0].numpy(), fs=16000)
            assert power[power.size // 2 + 200 :].sum() < 1e-4 * power.sum()  # nothing above ~4.2 kHz
    wide = NarrowbandDataset(
        clips, 16000, 1, data, seed=0, degradation=DegradationConfig(telephone_probability=0.0)
    )
    edges = wide[0]["edge_hz"]
    assert torch.all((edges >= 3500) & (edges <= 7000))


def test_tiny_recipe_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = ROOT / "recipes" / "bwe_8to16_tiny.yaml"
    straight = Trainer(load_recipe(recipe), tmp_path / "straight", quiet=True).fit()
    assert set(straight.evaluations[-1]) >= {"sinc", "extended"}
    Trainer(load_recipe(recipe, ["data.valid=null"]), tmp_path / "split", quiet=True).fit(max_steps=4)
    resumed = Trainer(load_recipe(recipe, ["data.valid=null"]), tmp_path / "split", resume=True, quiet=True)
    resumed.fit()
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
