"""Training data: determinism per step, crop lengths, short clips, manifests, EQ and noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from audiokit import io
from audiokit.dsp import loudness_lufs
from audiokit.errors import RecipeError
from audiokit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from audiokit.train.data import CropDataset, batches, peaking_biquad, read_clips, shelf_biquad
from audiokit.train.recipe import DataConfig

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def _dataset(clips, seed=0, rank=0, **config) -> CropDataset:
    config = {"segment_seconds": 0.5, "batch_size": 2, **config}
    return CropDataset(clips, 16000, 1, DataConfig(**config), seed=seed, rank=rank)


@pytest.fixture(scope="module")
def clips():
    return read_clips(str(SAMPLES), "speech_fr_16k_*")


def test_batches_depend_only_on_seed_rank_and_step(clips):
    a, b = _dataset(clips), _dataset(clips)
    first = [b[s]["input"] for s in range(3)]
    assert first[0].shape == (2, 1, 8000) and first[0].dtype == torch.float32
    assert torch.equal(a[2]["input"], first[2])  # random access == sequential access
    streamed = batches(a, 1)
    assert torch.equal(next(streamed)["input"], first[1]) and torch.equal(next(streamed)["input"], first[2])
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(_dataset(clips, rank=1)[0]["input"], first[0])
    assert not torch.equal(_dataset(clips, seed=1)[0]["input"], first[0])


def test_loudness_normalised_and_never_clipping(clips):
    data = _dataset(clips, gain_db=[0.0, 0.0], eq_probability=0.0, target_level_db=-23.0)
    for step in range(3):
        for item in data[step]["input"]:
            assert abs(loudness_lufs(item, 16000) + 23.0) < 0.5
    loud = _dataset(clips, gain_db=[30.0, 30.0])
    assert loud[0]["input"].abs().max() <= 0.99 + 1e-6


def test_short_clips_are_joined_within_their_group_then_padded(tmp_path):
    tone = np.sin(2 * np.pi * 440 * np.arange(1600) / 16000).astype(np.float32) * 0.5
    for name in ("a1", "a2"):
        io.save(tmp_path / f"{name}.wav", tone[None], 16000, subtype="FLOAT")
    io.save(tmp_path / "b.wav", tone[None] * 0, 16000, subtype="FLOAT")
    rows = [{"path": f"{n}.wav", "seconds": 0.1, "group": "a"} for n in ("a1", "a2")]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    clips = read_clips(str(tmp_path / "m.jsonl"))
    assert [c.group for c in clips] == ["a", "a"] and clips[0].path == str(tmp_path / "a1.wav")
    data = _dataset(clips, segment_seconds=0.5, loudness="none", gain_db=[0.0, 0.0], eq_probability=0.0)
    crop = data[0]["input"][0, 0].numpy()
    # 16 clips of 0.1 s at most are joined, so 0.5 s is covered by the tone: no padding needed here
    assert np.allclose(crop, np.tile(tone, 5)[: crop.size], atol=1e-6)
    lone = _dataset(clips[:1], segment_seconds=2.0, loudness="none", gain_db=[0.0, 0.0], eq_probability=0.0)
    crop = lone[0]["input"][0, 0].numpy()
    assert np.allclose(crop[:1600], tone, atol=1e-6) and crop.size == 32000


def test_noise_is_mixed_at_the_requested_snr(clips, tmp_path):
    rng = np.random.default_rng(0)
    io.save(
        tmp_path / "noise.wav", (0.1 * rng.standard_normal(32000)).astype(np.float32)[None], 16000, "FLOAT"
    )
    noise = read_clips(str(tmp_path))
    config = DataConfig(
        segment_seconds=0.5, batch_size=2, noise=str(tmp_path), noise_probability=1.0, snr_db=[10.0, 10.0]
    )
    data = CropDataset(clips, 16000, 1, config, seed=0, noise_clips=noise)
    batch = data[0]
    added = batch["input"] - batch["clean"]
    snr = 10 * torch.log10(batch["clean"].square().sum(-1) / added.square().sum(-1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.01)


@pytest.mark.parametrize("kind", ["low", "high"])
def test_shelf_filters_have_the_requested_gain(kind):
    b, a = shelf_biquad(kind, 6.0, 1000.0, 16000)
    _, response = scipy.signal.freqz(b, a, worN=[0.0, 500.0, 1000.0, 8000.0 - 1e-6], fs=16000)
    gains = 20 * np.log10(np.abs(response))
    inside, outside = (gains[0], gains[3]) if kind == "low" else (gains[3], gains[0])
    assert inside == pytest.approx(6.0, abs=0.01) and outside == pytest.approx(0.0, abs=0.01)
    assert gains[2] == pytest.approx(3.0, abs=0.05)  # half the shelf gain (in dB) at the corner


def test_unknown_sources_are_recipe_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOKIT_DATA", str(tmp_path))
    with pytest.raises(RecipeError, match=r"prepared manifest .*\(`audiokit data prepare`, docs/data\.md\)"):
        read_clips("train_speech")
    with pytest.raises(RecipeError, match=r"`audiokit data prepare --sample-rate 24000`"):
        read_clips("train_speech", sample_rate=24000)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "train_speech.jsonl").write_text('{"no_path": 1}\n')
    with pytest.raises(RecipeError, match="train_speech.jsonl:1: not a manifest line"):
        read_clips("train_speech")
    # a 'pair' that is no path was Python's TypeError from os.path
    (tmp_path / "manifests" / "train_speech.jsonl").write_text('{"path": "a.flac", "pair": 5}\n')
    with pytest.raises(
        RecipeError, match=r"train_speech.jsonl:1: not a manifest line: 'pair' 5 is not a path"
    ):
        read_clips("train_speech")


def test_prepared_manifests_are_found_in_the_folder_of_the_models_rate(tmp_path, monkeypatch):
    # the same lookup as `audiokit data`: manifests/ for 16 kHz, manifests/sr<rate>/ for other rates
    monkeypatch.setenv("AUDIOKIT_DATA", str(tmp_path))
    for folder, seconds in (("manifests", 1.0), ("manifests/sr24000", 2.0)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        row = {"path": str(SAMPLES / "speech_fr_16k_a.flac"), "seconds": seconds}
        (tmp_path / folder / "train_speech.jsonl").write_text(json.dumps(row) + "\n")
    assert read_clips("train_speech")[0].seconds == 1.0
    assert read_clips("train_speech", sample_rate=24000)[0].seconds == 2.0


def test_checkpoint_round_trips_rng_states(tmp_path):
    import random

    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(tmp_path / "c.pt", {"rng": state, "w": torch.ones(2)})
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert expected[0] == again[0] and expected[1] == again[1] and torch.equal(expected[2], again[2])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    assert math.isfinite(expected[1])


def test_worker_processes_give_the_same_batches(clips):
    data = _dataset(clips)
    in_process = batches(data, 3, num_workers=0)
    workers = batches(data, 3, num_workers=2)
    for _ in range(3):
        assert torch.equal(next(in_process)["input"], next(workers)["input"])


def _truncated_flac(path: Path, seconds: float) -> None:
    """A FLAC whose header promises ``seconds`` of audio and whose data stops a tenth of the way in."""
    noise = np.random.default_rng(0).normal(0, 0.1, round(seconds * 16000)).astype(np.float32)
    io.save(path, noise[None], 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 10])


def test_an_unreadable_clip_is_skipped_with_one_warning(clips, tmp_path, capsys):
    """A clip whose data is corrupt (its header is fine, so the run starts) is skipped when drawn, with
    one warning naming it; the batches hold readable speech only."""
    broken = tmp_path / "broken.flac"
    _truncated_flac(broken, 30.0)  # by duration, most draws pick it
    data = _dataset([*clips, *read_clips(str(tmp_path))], segment_seconds=0.5)
    for step in range(4):
        for item in data[step]["clean"]:
            assert item.abs().max() > 0.01
    assert list(data.unreadable) == [str(broken)]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(
        f"audiokit train: warning: skipping a training clip: {broken}: "
    )
    assert "truncated or corrupt" in warnings[0]


def test_too_many_unreadable_clips_stop_the_run(clips, tmp_path, capsys):
    for i in range(11):
        _truncated_flac(tmp_path / f"broken{i:02d}.flac", 5.0)
    data = _dataset([*clips[:1], *read_clips(str(tmp_path))], segment_seconds=0.5)
    with pytest.raises(
        RecipeError, match=r"^11 of 12 training clips cannot be decoded: .*broken\d\d\.flac: "
    ):
        for step in range(200):
            data[step]
    only_broken = _dataset(read_clips(str(tmp_path))[:1], segment_seconds=0.5)
    with pytest.raises(RecipeError, match="no readable clip in 1000 draws"):
        only_broken[0]


@pytest.mark.parametrize("exponent", [1.0, 0.5, 0.0])
def test_group_exponent_sets_each_groups_share_of_the_draws(tmp_path, exponent):
    """Group a holds 9 s in three clips, group b 1 s: a's share of the crops is 9 ** e / (9 ** e + 1)."""
    rows = []
    for name, group, freq, seconds in (
        ("a1", "a", 440, 3),
        ("a2", "a", 440, 3),
        ("a3", "a", 440, 3),
        ("b", "b", 1760, 1),
    ):
        t = np.arange(seconds * 16000) / 16000
        io.save(
            tmp_path / f"{name}.wav",
            (0.3 * np.sin(2 * np.pi * freq * t))[None].astype(np.float32),
            16000,
            subtype="FLOAT",
        )
        rows.append({"path": f"{name}.wav", "seconds": seconds, "group": group})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = _dataset(
        read_clips(str(tmp_path / "m.jsonl")),
        segment_seconds=0.05,
        batch_size=8,
        group_exponent=exponent,
        loudness="none",
        gain_db=[0.0, 0.0],
        eq_probability=0.0,
    )
    crops = torch.cat([data[step]["clean"][:, 0] for step in range(100)]).numpy()  # 800 crops of 800 samples
    spectrum = np.abs(np.fft.rfft(crops, axis=-1))
    from_a = spectrum[:, 22] > spectrum[:, 88]  # 440 Hz against 1760 Hz (20 Hz bins)
    expected = 9**exponent / (9**exponent + 1)
    assert abs(from_a.mean() - expected) < 3 * np.sqrt(expected * (1 - expected) / from_a.size) + 0.01


@pytest.mark.parametrize("gain_db", [9.0, -6.0])
def test_peaking_filter_has_the_requested_gain_at_its_centre_only(gain_db):
    b, a = peaking_biquad(gain_db, 1000.0, 2.0, 16000)
    _, response = scipy.signal.freqz(b, a, worN=[0.0, 1000.0, 8000.0 - 1e-6], fs=16000)
    gains = 20 * np.log10(np.abs(response))
    assert gains[1] == pytest.approx(gain_db, abs=0.01)
    assert gains[0] == pytest.approx(0.0, abs=0.01) and gains[2] == pytest.approx(0.0, abs=0.01)
    # Q 2 spans about half an octave between the half-gain points: an octave away, less than half the gain
    _, octave = scipy.signal.freqz(b, a, worN=[2000.0], fs=16000)
    assert abs(20 * np.log10(np.abs(octave[0]))) < abs(gain_db) / 2


def test_eq_peaks_change_the_crops_spectrum_and_nothing_else(tmp_path):
    rng = np.random.default_rng(0)
    clip = tmp_path / "noise.wav"
    sf.write(clip, 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
    clips = read_clips(str(tmp_path))
    base = dict(segment_seconds=1.0, batch_size=4, eq_probability=1.0, eq_gain_db=0.0, loudness="rms")
    plain = CropDataset(clips, 16000, 1, DataConfig(**base), seed=0)[0]["input"]
    peaked = CropDataset(clips, 16000, 1, DataConfig(**base, eq_peaks=2, eq_peak_db=12.0), seed=0)[0]["input"]
    assert torch.equal(
        plain, CropDataset(clips, 16000, 1, DataConfig(**base, eq_peaks=0), seed=0)[0]["input"]
    )
    spectra = [
        torch.fft.rfft(x, dim=-1).abs().square()[..., :8000].reshape(4, 80, 100).mean(-1)
        for x in (plain, peaked)
    ]
    ratio_db = 10 * torch.log10(spectra[1] / spectra[0])  # (items, 80 bands of 100 Hz)
    # per item, some band moved by several dB (a peak or a notch), while the shelves alone (0 dB) move none
    assert (ratio_db.abs().amax(-1) > 3.0).all()


@pytest.mark.parametrize("seconds", ["abc", [1], True, float("inf"), float("nan"), -1.0, 10**400])
def test_a_manifest_with_a_bad_duration_is_a_recipe_error(tmp_path, seconds):
    # not a ValueError/TypeError from float(), nor NaN draw probabilities at the first step
    rows = [{"path": str(SAMPLES / "speech_fr_16k_a.flac"), "seconds": seconds}]
    rows.append({"path": str(SAMPLES / "speech_fr_16k_b.flac")})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RecipeError, match=r"m\.jsonl gives .*speech_fr_16k_a\.flac a 'seconds' of"):
        read_clips(str(manifest))
