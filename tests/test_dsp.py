"""audiokit.dsp against librosa, numpy loops and BS.1770's published values."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from audiokit import dsp
from audiokit.errors import UsageError


@pytest.mark.parametrize(
    "rate,n_fft,n_mels,f_min,f_max,htk",
    [
        (16000, 1024, 80, 0.0, None, False),
        (22050, 2048, 128, 30.0, 8000.0, False),
        (44100, 512, 40, 0.0, None, True),
        (16000, 511, 40, 0.0, None, False),
    ],
)
def test_mel_filterbank_equals_librosa(rate, n_fft, n_mels, f_min, f_max, htk):
    ours = dsp.mel_filterbank(rate, n_fft, n_mels, f_min, f_max, htk=htk).numpy()
    ref = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=htk)
    assert np.abs(ours - ref).max() < 1e-6


def test_mel_scale_round_trip_and_librosa():
    f = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 11025.0])
    np.testing.assert_allclose(dsp.hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-10)
    np.testing.assert_allclose(dsp.mel_to_hz(dsp.hz_to_mel(f)), f, atol=1e-8)
    np.testing.assert_allclose(dsp.erb_to_hz(dsp.hz_to_erb(f)), f, atol=1e-8)


def test_erb_filterbank_centres_on_erb_scale():
    fb = dsp.erb_filterbank(16000, 1024, 24, 50.0, 8000.0).numpy()
    freqs = np.linspace(0, 8000, 513)
    peaks = freqs[fb.argmax(axis=1)]
    expected = dsp.erb_to_hz(np.linspace(dsp.hz_to_erb(50.0), dsp.hz_to_erb(8000.0), 26))[1:-1]
    assert np.all(np.abs(peaks - expected) <= 8000 / 512)
    assert np.all(np.diff(peaks) > 0) and fb.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("window", ["hann", "sqrt_hann", "hamming", "blackman"])
@pytest.mark.parametrize("n_fft,hop", [(512, 128), (400, 100), (1024, 256)])
def test_stft_istft_perfect_reconstruction(window, n_fft, hop):
    x = torch.randn(2, 3, 12345, dtype=torch.float64)
    spec = dsp.stft(x, n_fft, hop, window=window)
    assert spec.shape == (2, 3, n_fft // 2 + 1, 12345 // hop + 1)
    y = dsp.istft(spec, n_fft, hop, window=window, length=x.shape[-1])
    assert torch.allclose(x, y, atol=1e-10)


def test_stft_matches_naive_dft():
    x = torch.randn(2048, dtype=torch.float64)
    spec = dsp.stft(x, 256, 64, center=False)
    w = np.hanning(257)[:-1]
    frame = x.numpy()[64 * 5 : 64 * 5 + 256] * w
    naive = np.array([np.sum(frame * np.exp(-2j * np.pi * k * np.arange(256) / 256)) for k in range(129)])
    np.testing.assert_allclose(spec[:, 5].numpy(), naive, atol=1e-9)


def test_frame_and_overlap_add_match_numpy_loop():
    x = torch.randn(3, 1000, dtype=torch.float64)
    frames = dsp.frame(x, 128, 50)
    assert frames.shape == (3, 1 + (1000 - 128) // 50, 128)
    assert torch.equal(frames[1, 7], x[1, 350:478])
    padded = dsp.frame(x, 128, 50, pad_end=True)
    assert (padded.shape[-2] - 1) * 50 + 128 >= 1000
    out = dsp.overlap_add(frames, 50).numpy()
    ref = np.zeros((3, (frames.shape[1] - 1) * 50 + 128))
    for i in range(frames.shape[1]):
        ref[:, i * 50 : i * 50 + 128] += frames[:, i].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)


def test_k_weighting_matches_bs1770_table_at_48k():
    b1, a1, b2, a2 = dsp.k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-10)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-10)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-10)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_loudness_of_1khz_sine(rate):
    # BS.1770: a 997 Hz sine at 0 dBFS peak in one channel reads -3.01 LUFS
    t = np.arange(rate * 3) / rate
    for amplitude in (1.0, 0.1):
        x = torch.tensor(amplitude * np.sin(2 * np.pi * 997 * t))[None]
        assert abs(dsp.loudness_lufs(x, rate) - (20 * np.log10(amplitude) - 3.01)) < 0.05
    assert dsp.loudness_lufs(torch.zeros(1, rate), rate) == float("-inf")


def test_loudness_gating_ignores_silence():
    rate = 16000
    t = np.arange(rate * 2) / rate
    tone = 0.1 * np.sin(2 * np.pi * 997 * t)
    with_silence = np.concatenate([tone, np.zeros(rate * 6)])
    a = dsp.loudness_lufs(torch.tensor(tone)[None], rate)
    b = dsp.loudness_lufs(torch.tensor(with_silence)[None], rate)
    # only the few blocks straddling the edge (partly silent) pull it down; without gating the
    # 6 s of silence would lower it by 10 log10(8 / 2) = 6 dB
    assert abs(a - b) < 0.5


def test_rms_db():
    assert abs(dsp.rms_db(torch.full((100,), 0.5)) - 20 * np.log10(0.5)) < 1e-9


@pytest.mark.parametrize("cutoff", [3000.0, 4000.0, 7000.0])
def test_bandwidth_of_band_limited_noise(cutoff):
    rate = 16000
    x = torch.randn(rate * 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectrum = torch.fft.rfft(x)
    spectrum[torch.fft.rfftfreq(x.shape[0], 1 / rate) > cutoff] = 0
    y = torch.fft.irfft(spectrum, x.shape[0])
    estimate = dsp.estimate_bandwidth(y, rate)
    assert abs(estimate - cutoff) < 0.03 * cutoff
    # adding silence before and after (with 20 ms fades: a hard cut is itself broadband) must not
    # change the estimate
    fade = torch.hann_window(641, dtype=torch.float64)[:320]
    y[:320] *= fade
    y[-320:] *= fade.flip(0)
    padded = torch.cat([torch.zeros(rate), y, torch.zeros(rate)])
    assert abs(dsp.estimate_bandwidth(padded, rate) - estimate) < 2 * rate / dsp.bandwidth.analysis_size(rate)


def test_bandwidth_streaming_equals_offline():
    rate = 16000
    y = torch.randn(2, rate * 2, generator=torch.Generator().manual_seed(1))
    est = dsp.BandwidthEstimator(rate)
    for chunk in torch.split(y, 777, dim=1):
        est.update(chunk)
    assert est.result() == dsp.estimate_bandwidth(y, rate)
    assert dsp.estimate_bandwidth(torch.zeros(rate), rate) == 0.0


def test_linear_filterbank_triangles_match_a_naive_loop():
    fb = dsp.linear_filterbank(16000, 512, 10, 100.0, 7000.0).numpy()
    edges = np.linspace(100.0, 7000.0, 12)
    freqs = np.fft.rfftfreq(512, 1 / 16000)
    for band in range(10):
        lo, mid, hi = edges[band : band + 3]
        for k, f in enumerate(freqs):
            expected = max(0.0, min((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
            assert abs(fb[band, k] - expected) < 1e-6


def test_a_few_samples_have_no_bandwidth_estimate():
    """Two samples at 44.1 kHz read as content up to 22 kHz (their zero-padded spectrum is broadband), so
    `encode` warned that speech-16k keeps less: under 10 ms there is no estimate (0.0, as silence)."""
    rng = np.random.default_rng(0)
    assert dsp.estimate_bandwidth(rng.uniform(-0.5, 0.5, (1, 2)), 44100) == 0.0
    assert dsp.estimate_bandwidth(rng.uniform(-0.5, 0.5, (1, 400)), 44100) == 0.0
    assert dsp.estimate_bandwidth(rng.uniform(-0.5, 0.5, (1, 1000)), 44100) > 15000  # 23 ms of white noise


def test_loudness_takes_one_item_of_the_models_shape_and_refuses_a_batch():
    """(batch, channels, samples) audio (what the models return) was read as channels of frames: the
    block step fell on the channel axis, so every sample started a block, and a wrong level came back."""
    rate = 16000
    t = np.arange(rate * 2) / rate
    x = torch.tensor(0.1 * np.sin(2 * np.pi * 997 * t) * (1 + np.sin(2 * np.pi * t)))[None]  # (1, T)
    assert dsp.loudness_lufs(x[None], rate) == dsp.loudness_lufs(x, rate) == dsp.loudness_lufs(x[0], rate)
    with pytest.raises(UsageError, match=r"\(2, 1, 32000\)"):
        dsp.loudness_lufs(x[None].repeat(2, 1, 1), rate)


def test_level_functions_take_numpy_as_estimate_bandwidth_does_and_the_stft_says_what_it_takes():
    """A numpy array (what librosa users hold) failed in loudness_lufs with "'numpy.ndarray' object has
    no attribute 'detach'" and in stft / mel_spectrogram with "... no attribute 'is_complex'"."""
    rate = 16000
    x = 0.1 * np.sin(2 * np.pi * 997 * np.arange(rate) / rate)
    assert dsp.loudness_lufs(x, rate) == dsp.loudness_lufs(torch.from_numpy(x), rate)
    assert dsp.rms_db(x) == dsp.rms_db(torch.from_numpy(x))
    for call in (lambda: dsp.stft(x, 512, 128), lambda: dsp.mel_spectrogram(x, rate)):
        with pytest.raises(TypeError, match=r"takes a torch tensor, got numpy\.ndarray; torch\.from_numpy"):
            call()
