"""Synthetic noises and the enhancement mixtures: levels, spectra, SNR, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiokit.data import noises
from audiokit.train.data import Clip, read_clips
from audiokit.train.mixtures import MixtureConfig, MixtureDataset
from audiokit.train.recipe import DataConfig

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_slope(exponent):
    rng = np.random.default_rng(0)
    x = noises.coloured_noise(rng, 1, 2**16, exponent)[0]
    assert _rms(x) == pytest.approx(1.0, rel=1e-5)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size)
    band = (freqs > 0.01) & (freqs < 0.4)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band] + 1e-20), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_hum_clicks_babble():
    rng = np.random.default_rng(1)
    hum = noises.hum(rng, 1, 16000, 16000)[0]
    power = np.abs(np.fft.rfft(hum)) ** 2  # 1 Hz bins
    assert power[:1300].sum() > 0.99 * power.sum()  # at most 20 harmonics of 50 or 60 Hz
    peak = int(np.argmax(power))
    assert min(abs(peak / round(peak / f0) - f0) for f0 in (50, 60) if round(peak / f0)) <= 0.6
    click = noises.clicks(rng, 2, 16000, 16000)
    assert click.shape == (2, 16000) and np.abs(click).max() == pytest.approx(1.0)
    assert np.mean(click == 0) > 0.5  # sparse
    talk = noises.babble([rng.standard_normal((1, 100)) * s for s in (1, 10, 100)])
    assert _rms(talk) == pytest.approx(1.0, rel=1e-5)


@pytest.fixture(scope="module")
def dataset() -> MixtureDataset:
    clips = read_clips(str(SAMPLES), "speech_fr_16k_*")
    config = DataConfig(segment_seconds=1.0, batch_size=4, eq_probability=0.0, gain_db=[0.0, 0.0])
    mixture = MixtureConfig(
        clean_probability=0.0,
        reverb_probability=0.0,
        second_noise_probability=0.0,
        snr_db=[5.0, 5.0],
        noise_weights={"white": 1.0, "pink": 1.0, "babble": 1.0},
    )
    return MixtureDataset(clips, 16000, 1, config, seed=3, mixture=mixture)


def test_mixture_snr_and_determinism(dataset):
    batch = dataset[7]
    again = dataset[7]
    np.testing.assert_array_equal(batch["input"].numpy(), again["input"].numpy())
    assert not np.array_equal(batch["input"].numpy(), dataset[8]["input"].numpy())
    for noisy, clean in zip(batch["input"].numpy(), batch["clean"].numpy(), strict=True):
        if not np.any(clean):
            continue
        snr = 10 * np.log10(
            np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2)
        )
        assert snr == pytest.approx(5.0, abs=0.05)


def test_clean_items_and_reverb_target():
    clips = read_clips(str(SAMPLES), "speech_fr_16k_*")
    config = DataConfig(segment_seconds=1.0, batch_size=2, eq_probability=0.0)
    clean_only = MixtureDataset(clips, 16000, 1, config, seed=0, mixture=MixtureConfig(clean_probability=1.0))
    batch = clean_only[0]
    np.testing.assert_array_equal(batch["input"].numpy(), batch["clean"].numpy())
    reverb = MixtureConfig(
        clean_probability=0.0, reverb_probability=1.0, snr_db=[60.0, 60.0], noise_weights={"white": 1}
    )
    room = MixtureDataset(clips, 16000, 1, config, seed=0, mixture=reverb)
    noisy, target = room[0]["input"].numpy(), room[0]["clean"].numpy()
    # the target (direct path + early reflections) is closer to the input than the dry speech would be,
    # and the late tail is in the input only
    assert _rms(noisy - target) > 0.01 * _rms(target)


def test_music_noise_is_a_resampled_excerpt_of_a_track(tmp_path):
    """A 44.1 kHz stereo track of a linear chirp (200 Hz at 0 s rising 400 Hz a second): each item's
    noise is a 1-s excerpt, so its pitch says where in the track it starts; at 16 kHz the pitch must be
    one the chirp passes through (unresampled, 44.1 kHz samples read as 16 kHz would sound 2.76x lower),
    steady within the excerpt's 400 Hz sweep, and different items start at different places."""
    rate, seconds = 44100, 8.0
    t = np.arange(int(rate * seconds)) / rate
    chirp = np.sin(2 * np.pi * (200.0 * t + 200.0 * t**2)).astype(np.float32)
    sf.write(tmp_path / "track.flac", np.stack([chirp, 0.5 * chirp], axis=1), rate)
    clips = read_clips(str(SAMPLES), "speech_fr_16k_*")
    music = read_clips(str(tmp_path))
    config = DataConfig(segment_seconds=1.0, batch_size=4, eq_probability=0.0, gain_db=[0.0, 0.0])
    mixture = MixtureConfig(
        clean_probability=0.0,
        reverb_probability=0.0,
        second_noise_probability=0.0,
        snr_db=[0.0, 0.0],
        noise_weights={"music": 1.0},
    )
    dataset = MixtureDataset(clips, 16000, 1, config, seed=5, mixture=mixture, music_clips=music)
    starts = []
    for step in range(3):
        batch = dataset[step]
        np.testing.assert_array_equal(batch["input"].numpy(), dataset[step]["input"].numpy())
        for noisy, clean in zip(batch["input"].numpy(), batch["clean"].numpy(), strict=True):
            noise = (noisy - clean)[0].astype(np.float64)
            spectrum = np.abs(np.fft.rfft(noise * np.hanning(noise.size)))
            peak_hz = float(np.argmax(spectrum))  # 1 Hz bins
            assert 200.0 <= peak_hz <= 200.0 + 400.0 * seconds
            inside = spectrum[int(peak_hz) - 250 : int(peak_hz) + 250].sum() ** 2
            assert inside / spectrum.sum() ** 2 > 0.9  # one sweep, not a mixture of pitches
            starts.append((peak_hz - 400.0) / 400.0)  # its middle's pitch gives its start
    assert len({round(s, 1) for s in starts}) > 6


def test_an_unreadable_music_track_is_skipped_with_a_warning(tmp_path, capsys):
    sf.write(tmp_path / "good.flac", np.full((16000, 1), 0.25, dtype=np.float32), 16000)
    (tmp_path / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    music = [Clip(str(tmp_path / name), 1.0, name) for name in ("broken.flac", "good.flac")]
    config = DataConfig(segment_seconds=0.5, batch_size=8, eq_probability=0.0)
    mixture = MixtureConfig(clean_probability=0.0, reverb_probability=0.0, noise_weights={"music": 1.0})
    clips = read_clips(str(SAMPLES), "speech_fr_16k_*")
    dataset = MixtureDataset(clips, 16000, 1, config, seed=0, mixture=mixture, music_clips=music)
    batch = dataset[0]
    assert all(
        np.any(noisy != clean)
        for noisy, clean in zip(batch["input"].numpy(), batch["clean"].numpy(), strict=True)
    )
    assert list(dataset.unreadable) == [str(tmp_path / "broken.flac")]
    assert (
        capsys.readouterr().err.count("warning: skipping a training clip: " + str(tmp_path / "broken.flac"))
        == 1
    )


def test_mixture_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown noise kinds"):
        MixtureConfig(noise_weights={"thunder": 1.0})


def test_pauses_silence_the_target_but_not_the_noise(dataset):
    mixture = dataclasses.replace(dataset.mixture, pause_probability=1.0, pause_seconds=[0.2, 0.2])
    paused = MixtureDataset(dataset.clips, 16000, 1, dataset.config, seed=3, mixture=mixture)
    batch = paused[7]
    for noisy, clean in zip(batch["input"].numpy(), batch["clean"].numpy(), strict=True):
        silent = clean[0] == 0.0
        edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
        assert (edges[1::2] - edges[::2]).max() >= 3200  # a whole 0.2 s pause of exact zeros
        assert np.mean(noisy[0][silent] != 0.0) > 0.99  # while the noise goes on


@pytest.mark.parametrize("speed", [0.85, 1.25])
def test_speed_perturbation_moves_the_pitch(tmp_path, speed):
    """Speech played ``speed`` times faster: a 200 Hz voice comes out at ``200 speed`` Hz, whole segment."""
    t = np.arange(3 * 16000) / 16000
    tone = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in (1, 2, 3)).astype(np.float32) * 0.1
    sf.write(tmp_path / "voice.wav", tone, 16000)
    clips = read_clips(str(tmp_path), "*.wav")
    config = DataConfig(segment_seconds=1.0, batch_size=1, eq_probability=0.0, gain_db=[0.0, 0.0])
    mixture = MixtureConfig(clean_probability=1.0, speed_probability=1.0, speed_range=[speed, speed])
    clean = MixtureDataset(clips, 16000, 1, config, seed=0, mixture=mixture)[0]["clean"][0, 0].numpy()
    assert clean.shape == (16000,) and np.abs(clean[-100:]).max() > 0.01  # no zero tail
    spectrum = np.abs(np.fft.rfft(clean * np.hanning(16000)))
    assert np.argmax(spectrum) == pytest.approx(200 * speed, abs=1)  # 1 Hz bins


def test_speed_range_is_checked():
    with pytest.raises(ValueError, match="speed_range"):
        MixtureConfig(speed_range=[0.0, 1.2])
