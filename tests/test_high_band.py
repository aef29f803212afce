"""The band above an enhancer's Nyquist frequency at higher input rates (audiokit/high_band.py): the
streaming class against a naive per-boundary loop, and the shipped enhancer on 44.1/48 kHz audio."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from audiokit import io
from audiokit.enhancement import enhance_audio, enhance_file, load_enhancer
from audiokit.high_band import GAIN_BAND, HighBand

SPEECH = io.load("samples/speech_fr_16k_b.flac")[0][0].numpy()


def naive_high_band(x, low, enhanced, rate, model_rate):
    """Every boundary's gain from its own two-hop window, then every sample, one by one."""
    hop = round(rate * 0.01)
    length = x.shape[-1]
    window = scipy.signal.get_window("hann", 2 * hop)
    freqs = np.fft.rfftfreq(2 * hop, 1 / rate)
    bins = (freqs >= GAIN_BAND[0] * model_rate / 2) & (freqs <= GAIN_BAND[1] * model_rate / 2)
    boundaries = -(-length // hop) + 1
    padded = [np.pad(s, ((0, 0), (hop, boundaries * hop + hop))) for s in (low, enhanced)]
    gains = np.zeros((x.shape[0], boundaries))
    for k in range(boundaries):
        power = [
            (np.abs(np.fft.rfft(s[:, k * hop : k * hop + 2 * hop] * window)[:, bins]) ** 2).sum(-1)
            for s in padded
        ]
        gains[:, k] = np.minimum(1.0, np.sqrt(power[1] / (power[0] + 1e-20)))
    out = np.zeros_like(x)
    for n in range(length):
        k, frac = divmod(n, hop)
        g = gains[:, k] + (gains[:, k + 1] - gains[:, k]) * frac / hop
        out[:, n] = enhanced[:, n] + g * (x[:, n] - low[:, n])
    return out


@pytest.mark.parametrize("rate", [48000, 44100, 22050])
def test_high_band_matches_a_naive_loop_for_any_blocking(rate):
    rng = np.random.default_rng(rate)
    length = 3 * rate // 10 + 7
    x = rng.normal(0, 0.3, (2, length))
    low = x + rng.normal(0, 0.05, x.shape)  # the signals the class would get: near the input
    enhanced = low * rng.uniform(0.0, 1.2, (2, 1))
    expected = naive_high_band(x, low, enhanced, rate, 16000)
    offline = HighBand(2, rate, 16000).push(*(torch.from_numpy(s) for s in (x, low, enhanced)), last=True)
    np.testing.assert_allclose(offline, expected, atol=2e-6)
    # the three signals in blocks of their own sizes, as the resamplers and the model deliver them
    streamed, high_band, given = [], HighBand(2, rate, 16000), [0, 0, 0]
    while given[0] < length:
        blocks = []
        for i, signal in enumerate((x, low, enhanced)):
            size = int(rng.integers(0, 900))
            blocks.append(torch.from_numpy(signal[:, given[i] : given[i] + size]))
            given[i] = min(length, given[i] + size)
        streamed.append(high_band.push(*blocks))
    rest = [torch.from_numpy(s[:, given[i] :]) for i, s in enumerate((x, low, enhanced))]
    streamed.append(high_band.push(*rest, last=True))
    np.testing.assert_allclose(np.concatenate(streamed, -1), expected, atol=2e-6)


def _wideband_speech(rate: int) -> np.ndarray:
    """Speech upsampled to ``rate`` plus a band above 8 kHz that follows its 4-7.5 kHz envelope (a
    fricative-like high band, which 16 kHz speech lacks)."""
    speech = io.resample(SPEECH[:, None], 16000, rate)[:, 0]
    b, a = scipy.signal.butter(4, [4000, 7500], "bandpass", fs=rate)
    envelope = np.abs(scipy.signal.hilbert(scipy.signal.lfilter(b, a, speech)))
    b, a = scipy.signal.butter(6, [9000, min(15000, 0.45 * rate)], "bandpass", fs=rate)
    noise = np.random.default_rng(1).normal(0, 1, speech.size)
    return (speech + scipy.signal.lfilter(b, a, noise) * envelope).astype(np.float32)


def _band_energy(audio, rate: int, low_hz: float, high_hz: float) -> float:
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64), axis=-1)
    freqs = np.fft.rfftfreq(np.asarray(audio).shape[-1], 1 / rate)
    return float((np.abs(spectrum[..., (freqs > low_hz) & (freqs < high_hz)]) ** 2).sum())


@pytest.mark.parametrize("rate", [48000, 44100])
def test_the_enhancer_keeps_a_clean_high_band_and_removes_a_noisy_one(rate, tmp_path):
    model = load_enhancer("enhance-16k")[0]
    clean = torch.from_numpy(_wideband_speech(rate))[None]
    noise = torch.from_numpy(np.random.default_rng(2).normal(0, 0.03, clean.shape).astype(np.float32))
    # passed through (dry 1): the output is the input, its band above 8 kHz included
    torch.testing.assert_close(
        enhance_audio(model, clean + noise, rate, dry=1.0), clean + noise, atol=1e-5, rtol=0
    )
    # clean speech keeps its high band as it keeps its low band (within 3 dB)
    kept = enhance_audio(model, clean, rate)
    high = 10 * np.log10(_band_energy(kept, rate, 9000, 15000) / _band_energy(clean, rate, 9000, 15000))
    low = 10 * np.log10(_band_energy(kept, rate, 1000, 7000) / _band_energy(clean, rate, 1000, 7000))
    assert -3 < high < 1 and abs(high - low) < 2, (high, low)
    # noise alone: removed above 8 kHz as below
    silenced = enhance_audio(model, noise, rate)
    assert _band_energy(silenced, rate, 9000, 15000) < 1e-3 * _band_energy(noise, rate, 9000, 15000)
    # noisy speech: the error above 8 kHz well under the input's
    noisy = clean + noise
    enhanced = enhance_audio(model, noisy, rate)
    assert _band_energy(enhanced - clean, rate, 9000, 15000) < 0.2 * _band_energy(noise, rate, 9000, 15000)
    # a file streamed block by block gives the offline output
    sf.write(tmp_path / "noisy.wav", noisy[0].numpy(), rate, subtype="FLOAT")
    enhance_file(model, tmp_path / "noisy.wav", tmp_path / "out.wav", block_frames=1000)
    streamed, out_rate = io.load(tmp_path / "out.wav")
    assert out_rate == rate and streamed.shape == noisy.shape
    torch.testing.assert_close(streamed, enhanced, atol=1e-5, rtol=0)
