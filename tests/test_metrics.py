"""audiokit.evaluation.metrics against direct calls of pesq/pystoi and naive numpy implementations."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pesq as pesq_lib
import pystoi
import pytest
import soxr
import torch

from audiokit import io
from audiokit.evaluation import metrics


@pytest.fixture(scope="module")
def speech(speech_files):
    wav, rate = io.load(speech_files[0], sample_rate=16000, channels=1)
    return wav[0].numpy().astype(np.float64), rate


@pytest.fixture(scope="module")
def degraded(speech):
    x, _ = speech
    rng = np.random.default_rng(0)
    return x + 0.02 * rng.standard_normal(x.shape)


def test_pesq_wideband_equals_direct_call(speech, degraded):
    x, rate = speech
    result = metrics.pesq(x, degraded, rate)
    assert result.mode == "wb" and not result.resampled
    assert result.score == pytest.approx(pesq_lib.pesq(16000, x, degraded, "wb"), abs=1e-9)
    assert metrics.pesq(x, x, rate).score > 4.4


def test_pesq_of_long_signals_averages_pieces_of_at_most_20_s(speech):
    """41 s of speech (the pesq library's C code crashed the process from ~100 s): three equal pieces,
    each scored by a direct call, their mean weighted by length."""
    x, rate = speech
    rng = np.random.default_rng(1)
    long = np.tile(x, int(np.ceil(41 * rate / x.size)))[: 41 * rate]
    noisy = long + 0.02 * rng.standard_normal(long.shape) * (np.arange(long.size) / long.size)  # varies
    result = metrics.pesq(long, noisy, rate)
    bounds = np.linspace(0, long.size, 4).round().astype(int)
    pieces = [
        pesq_lib.pesq(rate, long[a:b], noisy[a:b], "wb") for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    assert result.segments == 3 and len(set(np.round(pieces, 3))) > 1
    assert result.score == pytest.approx(np.average(pieces, weights=np.diff(bounds)), abs=1e-9)
    assert metrics.pesq(x[: 20 * rate], x[: 20 * rate], rate).segments == 1


def test_pesq_narrowband_and_resampled(speech, degraded):
    x, _ = speech
    x8 = soxr.resample(x, 16000, 8000)
    d8 = soxr.resample(degraded, 16000, 8000)
    result = metrics.pesq(x8, d8, 8000)
    assert result.mode == "nb" and result.score == pytest.approx(pesq_lib.pesq(8000, x8, d8, "nb"), abs=1e-9)
    x48 = soxr.resample(x, 16000, 48000)
    d48 = soxr.resample(degraded, 16000, 48000)
    up = metrics.pesq(x48, d48, 48000)
    assert up.resampled and up.sample_rate == 16000 and up.mode == "wb"
    assert abs(up.score - metrics.pesq(x, degraded, 16000).score) < 0.1


def test_pesq_of_silence_is_nan_not_an_exception():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the user's stderr either
        assert np.isnan(metrics.pesq(np.zeros(16000), np.zeros(16000), 16000).score)


def test_stoi_and_estoi_equal_pystoi(speech, degraded):
    x, rate = speech
    assert metrics.stoi(x, degraded, rate) == pytest.approx(pystoi.stoi(x, degraded, rate), abs=1e-12)
    assert metrics.stoi(x, degraded, rate, extended=True) == pytest.approx(
        pystoi.stoi(x, degraded, rate, extended=True), abs=1e-12
    )


def test_stoi_of_too_short_clips_is_nan_not_a_placeholder(speech):
    x, rate = speech
    short = x[: rate // 4]
    assert np.isnan(metrics.stoi(short, short, rate))


def test_si_sdr_properties_and_naive_formula():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(8000)
    n = rng.standard_normal(8000)
    est = s + 0.1 * n
    # naive: project onto the zero-mean reference
    s0, e0 = s - s.mean(), est - est.mean()
    target = (e0 @ s0) / (s0 @ s0) * s0
    naive = 10 * np.log10(np.sum(target**2) / np.sum((e0 - target) ** 2))
    assert metrics.si_sdr(s, est) == pytest.approx(naive, abs=1e-9)
    assert metrics.si_sdr(s, 3.0 * est + 0.5) == pytest.approx(naive, abs=1e-9)  # scale and DC invariant
    assert metrics.si_sdr(s, s) > 100


def test_lsd_equals_naive_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(20000)
    y = x + 0.3 * rng.standard_normal(20000)
    ours = metrics.log_spectral_distance(x, y)

    def power(sig):
        return np.abs(librosa.stft(sig, n_fft=2048, hop_length=512, window="hann", pad_mode="reflect")) ** 2

    px, py = power(x), power(y)
    naive = np.mean(
        [
            np.sqrt(np.mean((np.log10(px[:, t] + 1e-8) - np.log10(py[:, t] + 1e-8)) ** 2))
            for t in range(px.shape[1])
        ]
    )
    assert ours == pytest.approx(naive, rel=1e-6)
    assert metrics.log_spectral_distance(x, x) == 0.0


def test_high_band_lsd_equals_naive_numpy():
    """LSD over the bins strictly above 4 kHz at 16 kHz: numpy STFT (Hann, centred, reflect padding)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(20000)
    y = x + 0.3 * rng.standard_normal(20000)
    n_fft, hop = 2048, 512
    window = np.hanning(n_fft + 1)[:-1]

    def power(sig):
        padded = np.pad(sig, n_fft // 2, mode="reflect")
        frames = np.stack([padded[t : t + n_fft] for t in range(0, len(padded) - n_fft + 1, hop)])
        return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, bins)

    freqs = np.arange(n_fft // 2 + 1) * 16000 / n_fft
    high = freqs > 4000
    diff = np.log10(power(x)[:, high] + 1e-8) - np.log10(power(y)[:, high] + 1e-8)
    naive = np.mean(np.sqrt(np.mean(diff**2, axis=1)))
    ours = metrics.high_band_log_spectral_distance(x, y, 16000, 4000.0)
    assert ours == pytest.approx(naive, rel=1e-6)
    assert metrics.high_band_log_spectral_distance(x, x, 16000, 4000.0) == 0.0
    assert np.isnan(metrics.high_band_log_spectral_distance(x, y, 16000, 8000.0))  # no bin above Nyquist
    # a low-passed copy differs only above the cut: its high-band LSD is ~sqrt(2) x the full-band one
    lowpassed = np.fft.irfft(np.fft.rfft(x) * (np.fft.rfftfreq(20000, 1 / 16000) < 4000), 20000)
    assert metrics.high_band_log_spectral_distance(x, lowpassed, 16000, 4000.0) > 1.3 * (
        metrics.log_spectral_distance(x, lowpassed)
    )


def test_mel_distance_equals_librosa_computation():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(16000)
    y = 0.5 * x + 0.1 * rng.standard_normal(16000)

    def log_mel(sig):
        m = librosa.feature.melspectrogram(
            y=sig, sr=16000, n_fft=1024, hop_length=256, n_mels=80, power=1.0, pad_mode="reflect"
        )
        return np.log10(np.maximum(m, 1e-5))

    naive = np.mean(np.abs(log_mel(x) - log_mel(y)))
    assert metrics.mel_distance(x, y, 16000) == pytest.approx(naive, rel=1e-5)


def test_multi_resolution_stft_distance_naive():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(8000)
    y = x + 0.2 * rng.standard_normal(8000)
    total = 0.0
    for n_fft, hop in ((2048, 512), (1024, 256), (512, 128)):
        sx = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, pad_mode="reflect"))
        sy = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, pad_mode="reflect"))
        total += np.linalg.norm(sx - sy) / (np.linalg.norm(sx) + 1e-7)
        total += np.mean(np.abs(np.log(sx + 1e-7) - np.log(sy + 1e-7)))
    assert metrics.multi_resolution_stft_distance(x, y) == pytest.approx(total / 3, rel=1e-6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="samples"):
        metrics.si_sdr(np.zeros(10), np.zeros(11))


def test_codebook_usage_entropy_perplexity_naive():
    rng = np.random.default_rng(5)
    codes = torch.from_numpy(rng.integers(0, 16, size=(3, 4, 50)))
    codes[:, 1] = 7  # codebook 1 collapsed onto one code
    usage = metrics.codebook_usage(codes, 16)
    entropy = metrics.codebook_entropy(codes, 16)
    for q in range(4):
        values = codes[:, q].reshape(-1).numpy()
        counts = np.bincount(values, minlength=16)
        assert usage[q].item() == pytest.approx(np.count_nonzero(counts) / 16)
        p = counts[counts > 0] / counts.sum()
        assert entropy[q].item() == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-9)
    assert entropy[1].item() == 0.0 and metrics.codebook_perplexity(codes, 16)[1].item() == 1.0


def test_nan_or_infinite_audio_is_refused_not_scored(speech):
    """pystoi scored test audio holding one NaN sample 1.0 (a perfect STOI/ESTOI) and the other metrics
    NaN, which the means leave out: the metrics refuse such audio and a scored row says why it has no
    scores."""
    from audiokit.evaluation.scoring import NON_FINITE, score_pair

    x, rate = speech
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[100] = bad
        for fn in (metrics.stoi, lambda r, e, s: metrics.pesq(r, e, s).score):
            with pytest.raises(ValueError, match="NaN or infinite"):
                fn(x, y, rate)
        with pytest.raises(ValueError, match="NaN or infinite"):
            metrics.si_sdr(y, x)
        row = score_pair(torch.from_numpy(x)[None], torch.from_numpy(y)[None], rate)
        assert all(np.isnan(row[name]) for name in metrics.METRICS), row
        assert NON_FINITE in row["skipped"]


def test_a_signal_of_several_channels_is_refused_not_scored_end_to_end():
    """(channels, samples) audio was flattened into one signal, its channels end to end, and scored:
    a plausible number for no signal the caller had. One channel in any layout is still one signal."""
    rng = np.random.default_rng(4)
    s = rng.standard_normal((2, 8000))
    est = s + 0.1 * rng.standard_normal((2, 8000))
    scores = {
        "si_sdr": lambda r, e: metrics.si_sdr(r, e),
        "lsd": lambda r, e: metrics.log_spectral_distance(r, e),
        "mel": lambda r, e: metrics.mel_distance(r, e, 16000),
        "stft": lambda r, e: metrics.multi_resolution_stft_distance(r, e),
        "stoi": lambda r, e: metrics.stoi(r, e, 16000),
        "pesq": lambda r, e: metrics.pesq(r, e, 16000).score,
    }
    for name, score in scores.items():
        with pytest.raises(ValueError, match=r"one channel .*got shape \(2, 8000\)"):
            score(s, est)
        one = score(s[0], est[0])
        for layout in (lambda x: x[None], lambda x: x[:, None], lambda x: torch.from_numpy(x)[None, None]):
            assert score(layout(s[0]), layout(est[0])) == pytest.approx(one, nan_ok=True), name
