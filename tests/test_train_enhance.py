"""The enhancement task: the tiny recipe trains, resumes bit-exactly, evaluates on a noisy set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from audiokit import io
from audiokit.cli import main
from audiokit.errors import ModelError, RecipeError
from audiokit.models import AudioModel
from audiokit.models.enhancer import Enhancer, grow_features, grow_hidden
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.recipe import load_recipe
from audiokit.train.tasks.enhance import negative_si_sdr, read_noisy_set
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "enhance_speech16k_tiny.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny recipe names samples/ relative to the checkout


def test_negative_si_sdr_matches_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 1, 800))
    est = 0.5 * ref + 0.1 * rng.standard_normal((2, 1, 800))
    expected = []
    for r, e in zip(ref.reshape(2, -1), est.reshape(2, -1), strict=True):
        target = (e @ r) / (r @ r) * r
        expected.append(10 * np.log10(np.sum(target**2) / np.sum((e - target) ** 2)))
    got = negative_si_sdr(torch.from_numpy(est).float(), torch.from_numpy(ref).float())
    assert float(got) == pytest.approx(-np.mean(expected), abs=1e-3)


def test_tiny_recipe_resumes_bit_exactly(tmp_path):
    Trainer(load_recipe(TINY), tmp_path / "straight", quiet=True).fit()
    Trainer(load_recipe(TINY), tmp_path / "split", quiet=True).fit(max_steps=4)
    resumed = Trainer(load_recipe(TINY), tmp_path / "split", resume=True, quiet=True)
    assert resumed.step == 4 and resumed.fit().step == 8
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    model = AudioModel.from_pretrained(tmp_path / "split" / "model.safetensors")
    assert isinstance(model, Enhancer) and model.config.hidden_dim == 16


def test_evaluates_on_a_noisy_set(tmp_path):
    folder = tmp_path / "noisy_set"
    clean, rate = io.load(ROOT / "samples" / "speech_fr_16k_a.flac", sample_rate=16000, channels=1)
    noisy = clean + 0.05 * torch.randn_like(clean)
    io.save(folder / "clean" / "a.wav", clean, rate)
    io.save(folder / "noisy" / "a.wav", noisy, rate)
    (folder / "clips.jsonl").write_text(json.dumps({"name": "a.wav"}) + "\n")
    recipe = load_recipe(TINY, [f"data.valid={folder}", "run.max_steps=2", "eval.every_steps=2"])
    result = Trainer(recipe, tmp_path / "run", quiet=True).fit()
    record = result.evaluations[-1]
    limit = round(recipe.eval.max_seconds * rate)
    ref = io.load(folder / "clean" / "a.wav")[0][0, :limit].double().numpy()
    est = io.load(folder / "noisy" / "a.wav")[0][0, :limit].double().numpy()
    target = (est @ ref) / (ref @ ref) * ref
    expected = 10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2))
    assert record["noisy"]["si_sdr"] == pytest.approx(expected, abs=0.01)
    assert set(record["enhanced"]) >= {"pesq", "stoi", "si_sdr"}


@pytest.mark.parametrize("band_features", ["diffstft", "adaptive"])
def test_front_end_ablation_variants_are_causal_and_train_their_front_end(tmp_path, band_features):
    model = Enhancer.from_config("enhance-16k", band_features=band_features)
    x = 0.1 * torch.randn(1, 1, 8000)
    later = x.clone()
    later[..., 4000:] += 0.1 * torch.randn(4000)
    with torch.no_grad():
        y, y_later = model(x), model(later)
    latency = model.algorithmic_latency  # a change at sample 4000 may reach back this far, no further
    assert y.shape == x.shape
    assert torch.equal(y[..., : 4000 - latency], y_later[..., : 4000 - latency])
    assert not torch.equal(y[..., 4000 - latency :], y_later[..., 4000 - latency :])

    overrides = [f"model.options.band_features={band_features}", "run.max_steps=2"]
    run = tmp_path / "run"
    trainer = Trainer(load_recipe(TINY, overrides), run, quiet=True)
    scaled = trainer.model.lr_scales()
    assert scaled and all(scale == 1000.0 for scale in scaled.values())
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if name in scaled}
    trainer.fit()
    groups = trainer.model_part.optimizer.param_groups
    assert [g["lr"] / groups[0]["lr"] for g in groups] == pytest.approx([1.0, 1000.0])
    moved = {
        name: float((p.detach() - before[name]).abs().max())
        for name, p in trainer.model.named_parameters()
        if name in scaled
    }
    assert max(moved.values()) > 1e-3, moved  # samples / Hz move at a rate near 1 per step, not 1e-3

    # the run streams: `audiokit enhance -m RUN` (chunk by chunk) writes what its model gives offline
    clip, out = tmp_path / "in.wav", tmp_path / "out.wav"
    io.save(clip, 0.1 * torch.randn(1, 12345), 16000, subtype="FLOAT")
    assert main(["enhance", str(clip), str(out), "-m", str(run), "-q"]) == 0  # a float file stays float
    enhanced, rate = io.load(out)
    offline = Enhancer.from_pretrained(run).enhance(io.load(clip)[0])
    assert rate == 16000 and enhanced.shape == offline.shape == (1, 12345)
    torch.testing.assert_close(enhanced, offline, atol=1e-5, rtol=0)


def test_erb_enhancer_has_one_learning_rate():
    assert Enhancer.from_config("enhance-16k").lr_scales() == {}


def test_ideal_band_gains_match_numpy_frames():
    model = Enhancer.from_config("enhance-16k")
    n_fft, hop = model.config.n_fft, model.config.hop_length
    rng = np.random.default_rng(3)
    clean = 0.1 * rng.standard_normal(1600)
    noisy = clean + 0.05 * rng.standard_normal(1600)
    gains, valid = model.ideal_band_gains(
        torch.from_numpy(noisy).float()[None, None], torch.from_numpy(clean).float()[None, None]
    )
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])  # periodic sqrt-Hann
    erb = model.erb.double().numpy()

    def band_energies(x: np.ndarray) -> np.ndarray:
        padded = np.concatenate([np.zeros(n_fft - hop), x, np.zeros(n_fft)])
        frames = [padded[m * hop : m * hop + n_fft] for m in range(gains.shape[1])]
        return np.stack([erb @ np.abs(np.fft.rfft(window * f)) ** 2 for f in frames])

    expected = np.minimum(np.sqrt(band_energies(clean) / np.maximum(band_energies(noisy), 1e-9)), 1.0)
    assert bool(valid[0, :10].all())
    np.testing.assert_allclose(gains[0].numpy(), expected, atol=2e-3)


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("band_gain", []),
        ("compressed_magnitude", []),
        ("compressed_magnitude", ["losses.excess_weight=4"]),
        ("pesq_style", []),
    ],
)
def test_optional_losses_train(tmp_path, loss, extra):
    overrides = [f"losses.{loss}=1.0", "run.max_steps=2", *extra]
    Trainer(load_recipe(TINY, overrides), tmp_path / "run", quiet=True).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(f"loss/{loss}" in row and np.isfinite(row[f"loss/{loss}"]) for row in rows)


def test_speech_frames_follow_numpy_frame_levels():
    """Frames of the clean target count as speech when within 30 dB of the loudest and above -65 dBFS."""
    model = Enhancer.from_config("enhance-16k")
    n_fft, hop = model.config.n_fft, model.config.hop_length
    rng = np.random.default_rng(5)
    levels_db = [-20.0, -55.0, -200.0, -35.0, -60.0]  # per 0.1 s segment, dBFS
    clean = np.concatenate([10 ** (db / 20) * rng.standard_normal(1600) for db in levels_db])
    frames = model.speech_frames(torch.from_numpy(clean).float()[None, None])[0].numpy()
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    padded = np.concatenate([np.zeros(n_fft - hop), clean, np.zeros(n_fft)])
    power = np.array(
        [
            np.sum((window * padded[m * hop : m * hop + n_fft]) ** 2) / np.sum(window**2)
            for m in range(len(frames))
        ]
    )
    level = 10 * np.log10(power + 1e-12)
    expected = (level > level.max() - 30) & (level > -65)
    disagree = np.flatnonzero(frames != expected)
    assert len(disagree) <= 2, disagree  # only at a threshold crossing within float rounding
    assert frames[3:8].all() and frames[33:38].all()  # -20 and -35 dB (within 30 dB of the loudest)
    assert not frames[13:18].any() and not frames[23:28].any() and not frames[43:48].any()
    quiet = model.speech_frames(torch.from_numpy(10 ** (-70 / 20) * clean[:1600]).float()[None, None])
    assert not quiet.any()  # below the -65 dBFS floor however it varies


def _grown_from(tmp_path, before: list[str], after: list[str]) -> tuple[Trainer, Enhancer]:
    """A tiny run with ``before`` overrides, then a trainer with ``after`` overrides started from its
    weights (``--init``); checks that the new model enhances exactly as the old one did."""
    Trainer(load_recipe(TINY, ["run.max_steps=2", *before]), tmp_path / "before", quiet=True).fit()
    weights = tmp_path / "before" / "model.safetensors"
    old = AudioModel.from_pretrained(weights).eval()
    trainer = Trainer(load_recipe(TINY, after), tmp_path / "after", init=weights, quiet=True)
    x = 0.1 * torch.randn(1, 1, 4000)
    torch.testing.assert_close(trainer.model.eval().enhance(x), old.enhance(x), atol=0, rtol=0)
    return trainer, old


def _grown_note(tmp_path) -> dict:
    return json.loads((tmp_path / "after" / "run.json").read_text())["sessions"][0]["init_grown_to"]


def test_init_without_pitch_grows_to_a_pitch_recipe(tmp_path):
    """A plain enhancer's weights start a pitch-feature run exactly where they stood."""
    after = ["model.options.pitch=true", "model.options.pitch_filter=false", "run.max_steps=1"]
    trainer, plain = _grown_from(tmp_path, ["model.options.pitch=false"], after)
    assert trainer.model.config.pitch
    trainer.fit()
    assert _grown_note(tmp_path) == {"pitch": True}
    with pytest.raises(ModelError, match="beyond added pitch"):
        grow_features(plain, replace(trainer.model.config, hidden_dim=32))
    with pytest.raises(ModelError, match="beyond added pitch"):  # analysis is added, never removed
        grow_features(trainer.model, plain.config)


def test_init_grows_to_a_noise_floor_recipe(tmp_path):
    """Weights with the pitch analysis start a run with noise-floor features exactly where they stood."""
    before = ["model.options.noise_floor_rise=[]"]  # enhance-16k's config has had the floor since version 3
    after = ["model.options.noise_floor_rise=[5.0, 20.0]", "run.max_steps=1"]
    trainer, _ = _grown_from(tmp_path, before, after)
    assert trainer.model.noise_floor is not None
    trainer.fit()
    assert _grown_note(tmp_path) == {"noise_floor_rise": [5.0, 20.0]}


def test_init_grows_a_wider_recurrent_network(tmp_path):
    """Weights of a narrower network start a wider run exactly where they stood, and the new units learn."""
    after = ["model.options.lstm_layers=2", "model.options.hidden_dim=24", "run.max_steps=3"]
    trainer, _ = _grown_from(tmp_path, ["model.options.lstm_layers=2"], after)
    assert not trainer.model.df_head.weight[:, 16:].any()  # the heads read the new units with zero weights
    trainer.fit()
    assert trainer.model.df_head.weight[:, 16:].abs().sum() > 0  # ... which then learn
    assert _grown_note(tmp_path) == {"hidden_dim": 24}
    with pytest.raises(ModelError, match="cannot shrink"):
        grow_hidden(trainer.model, 16)


def test_init_adds_a_vad_head_that_trains(tmp_path):
    """Weights without a voice-activity head start a run with one exactly where they stood; it trains."""
    after = ["model.options.vad_head=true", "losses.vad=1.0", "run.max_steps=2"]
    trainer, _ = _grown_from(tmp_path, [], after)
    head = trainer.model.vad_head.weight.detach().clone()
    trainer.fit()
    assert _grown_note(tmp_path) == {"vad_head": True}
    assert not torch.equal(trainer.model.vad_head.weight.detach(), head)
    rows = [json.loads(line) for line in (tmp_path / "after" / "metrics.jsonl").read_text().splitlines()]
    assert any(0.0 < row.get("loss/vad", -1.0) < 2.0 for row in rows)
    with pytest.raises(RecipeError, match="vad_head"):
        Trainer(load_recipe(TINY, ["losses.vad=1.0"]), tmp_path / "no-head", quiet=True)


def test_noisy_set_stride_spreads_the_clips(tmp_path):
    clean, rate = io.load(ROOT / "samples" / "speech_fr_16k_a.flac", sample_rate=16000, channels=1)
    names = [f"{i}.wav" for i in range(7)]
    for i, name in enumerate(names):
        io.save(tmp_path / "clean" / name, clean[:, :1600] * (i + 1) / 8, rate)
        io.save(tmp_path / "noisy" / name, clean[:, :1600] * (i + 1) / 8, rate)
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps({"name": n}) + "\n" for n in names))
    spread = read_noisy_set(tmp_path, rate, 3, 1.0, stride=3)
    assert [name for name, _ in spread] == ["0.wav", "3.wav", "6.wav"]
    assert [name for name, _ in read_noisy_set(tmp_path, rate, 2, 1.0)] == ["0.wav", "1.wav"]
    with pytest.raises(RecipeError, match="eval.stride"):
        load_recipe(TINY, ["eval.stride=0"])


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ('{"name": "0.wav"}\n{"name": "1.w', r"clips.jsonl:2: not a JSON line"),  # cut short
        ('{"name": "0.wav"}\n{"snr_db": 5}\n', r"clips.jsonl: the row \{'snr_db': 5\} has no string 'name'"),
        ('["0.wav"]\n', r"has no string 'name'"),
    ],
)
def test_a_broken_clip_list_is_a_recipe_error(tmp_path, listing, message):
    """A cut or hand-edited clips.jsonl was Python's JSONDecodeError/KeyError when the trainer started."""
    (tmp_path / "clips.jsonl").write_text(listing)
    with pytest.raises(RecipeError, match=f"data.valid: .*{message}"):
        read_noisy_set(tmp_path, 16000, 8, 1.0)


def test_a_negative_front_end_learning_rate_scale_is_refused():
    """``frontend_lr_scale`` multiplies the learning rate of the front end's samples and Hz: a negative one
    trained the window length by gradient ascent, without a word; 0 freezes the front end."""
    overrides = ["model.options.band_features=diffstft", "model.options.frontend_lr_scale=-1"]
    with pytest.raises(RecipeError, match=r"frontend_lr_scale must be a finite number >= 0 .*got -1.0"):
        load_recipe(TINY, overrides)
    assert load_recipe(TINY, [overrides[0], "model.options.frontend_lr_scale=0"])
