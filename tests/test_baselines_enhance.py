"""Enhancement baselines (RNNoise, spectral gating) and enhancers in ``audiokit eval``, on real speech.

``samples/noisy_speech_fr_16k_snr5.flac`` is ``speech_fr_16k_a.flac`` plus real machinery noise at
5 dB SNR, mixed without rescaling the speech (``recipes/data/make_samples.py``), so the clean clip is
its exact reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from audiokit import io, rnnoise
from audiokit.cli import main
from audiokit.evaluation import baselines
from audiokit.evaluation.metrics import si_sdr
from audiokit.models.enhancer import Enhancer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def best_lag(out: np.ndarray, ref: np.ndarray, search: int) -> int:
    """The lag (samples) in ``[-search, search]`` at which ``out`` correlates best with ``ref``."""
    corr = scipy.signal.correlate(out, ref, mode="full", method="fft")
    lags = scipy.signal.correlation_lags(len(out), len(ref))
    window = np.abs(lags) <= search
    return int(lags[window][np.argmax(corr[window])])


@pytest.fixture(scope="module")
def clean_noisy() -> tuple[torch.Tensor, torch.Tensor]:
    clean, _ = io.load(SAMPLES / "speech_fr_16k_a.flac")
    noisy, _ = io.load(SAMPLES / "noisy_speech_fr_16k_snr5.flac")
    assert clean.shape == noisy.shape
    return clean, noisy


def test_rnnoise_delay_is_two_frames_on_real_speech():
    """The raw library's output lags its 48 kHz input by :data:`rnnoise.DELAY` (960) samples."""
    wav, _ = io.load(SAMPLES / "speech_en_48k.wav")
    x = wav[0].numpy()
    padded = np.zeros(-(-(len(x) + 2000) // rnnoise.FRAME_SIZE) * rnnoise.FRAME_SIZE, np.float32)
    padded[: len(x)] = x
    out = rnnoise.RNNoiseState().process(padded)
    assert best_lag(out, x, 2000) == rnnoise.DELAY == 960


@pytest.mark.parametrize("name", ["speech_fr_16k_a.flac", "speech_ca_44k.flac"])
def test_rnnoise_output_aligns_sample_exactly(name):
    """Through the baseline (48 kHz resampling and back, delay removed) the output has the input's
    length and correlates best at lag 0, at 16 kHz and at 44.1 kHz."""
    wav, rate = io.load(SAMPLES / name)
    out = baselines.rnnoise(wav, rate).wav
    assert out.shape == wav.shape
    assert best_lag(out[0].numpy(), wav[0].numpy(), rate // 20) == 0


def test_rnnoise_reduces_real_noise(clean_noisy):
    clean, noisy = clean_noisy
    out = baselines.rnnoise(noisy, 16000).wav
    assert best_lag(out[0].numpy(), clean[0].numpy(), 800) == 0
    noisy_sdr, out_sdr = float(si_sdr(clean[0], noisy[0])), float(si_sdr(clean[0], out[0]))
    assert out_sdr > noisy_sdr + 2.0, (noisy_sdr, out_sdr)  # measured: 5.0 -> 7.7 dB


def test_gating_keeps_shape_and_alignment(clean_noisy):
    clean, noisy = clean_noisy
    stereo = torch.cat([noisy, 0.5 * noisy])
    out = baselines.gating(stereo, 16000).wav
    assert out.shape == stereo.shape and torch.isfinite(out).all()
    assert best_lag(out[0].numpy(), clean[0].numpy(), 800) == 0


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """``clean/a.flac`` and ``noisy/a.flac`` (the same relative path)."""
    root = tmp_path_factory.mktemp("enhance-eval")
    for folder, name in (("clean", "speech_fr_16k_a.flac"), ("noisy", "noisy_speech_fr_16k_snr5.flac")):
        (root / folder).mkdir()
        shutil.copy(SAMPLES / name, root / folder / "a.flac")
    return root / "clean", root / "noisy"


def run_json(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_runs_baselines_and_an_enhancer_on_the_noisy_input(tmp_path, capsys, pair_dirs):
    clean, noisy = pair_dirs
    noisy_report = run_json(capsys, str(clean), str(noisy))
    rnnoise_report = run_json(capsys, str(clean), str(noisy), "--baseline", "rnnoise")
    assert rnnoise_report["baseline"] == "rnnoise" and rnnoise_report["noisy_input"] == str(noisy)
    assert rnnoise_report["si_sdr"] > noisy_report["si_sdr"] + 2.0
    assert rnnoise_report["pesq"] > noisy_report["pesq"]
    torch.manual_seed(0)
    model_path = Enhancer.from_config("enhance-16k").save_pretrained(tmp_path / "enhancer.safetensors")
    keep = tmp_path / "keep"
    report = run_json(capsys, str(clean), str(noisy), "-m", str(model_path), "--keep", str(keep))
    assert report["enhancer"] == str(model_path) and report["model"] == "enhance-16k"
    assert report["weights_sha256"] == Enhancer.from_pretrained(model_path).weights_sha256()
    kept, rate = sf.read(keep / "a.wav", dtype="float32")
    assert rate == 16000 and len(kept) == sf.info(noisy / "a.flac").frames
    assert np.isfinite(report["si_sdr"])


def test_eval_enhancement_needs_the_noisy_input(capsys, pair_dirs):
    clean, _ = pair_dirs
    assert main(["eval", str(clean), "--baseline", "gating"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TEST_DIR" in err
