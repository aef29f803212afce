"""Every shipped version of ``enhance-16k`` loads by name (``enhance-16k@1`` to ``@3``, through the
weights archive ``audiokit/weights/ARCHIVE.json``, as the codec's versions do) with the config it
trained with, in Python and in every command that takes a model (enhance, eval, bench, serve) or
describes one (info); each enhances a real noisy clip exactly as the code of the commit that shipped it
did, and has a card naming its weights, how to load them and the noise it trained on."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, SAMPLES, run_stream
from serve_support import running_server, speech

import audiokit.io as aio
from audiokit import client
from audiokit.bench.audio import model_to_time
from audiokit.cli import main
from audiokit.evaluation.metrics import si_sdr
from audiokit.models.base import resolve_weights
from audiokit.models.enhancer import CONFIGS, Enhancer
from audiokit.serve import ServerConfig, load_engines

ARCHIVE = json.loads((ROOT / "audiokit" / "weights" / "ARCHIVE.json").read_text())["weights"]
VERSIONS = {entry["version"]: sha256 for sha256, entry in ARCHIVE.items() if entry["model"] == "enhance-16k"}
NOISY = SAMPLES / "noisy_speech_fr_16k_snr5.flac"  # speech_fr_16k_a + machinery noise, no digital silence

# what sets each version's config apart (docs/training.md, "The enhancer"): version 2 added the band
# normalisation and dropped the low band's spectrum from the features, version 3 the noise floor
OWN_CONFIG = {
    1: {"band_norm_frames": 0, "low_band_features": True, "noise_floor_rise": ()},
    2: {"band_norm_frames": 100, "low_band_features": False, "noise_floor_rise": ()},
    3: {"band_norm_frames": 100, "low_band_features": False, "noise_floor_rise": (5.0, 20.0)},
}
STEPS = {1: 18032, 2: 20565, 3: 6676}

# SI-SDR (dB) of NOISY enhanced by each version with the code of the commit that shipped it (8b51aee,
# 656d8bf, c24e911: outputs equal to this package's within 1e-7; the noisy input scores 5.00 dB)
SHIPPED_SI_SDR = {1: 8.778, 2: 9.150, 3: 9.318}


@pytest.fixture(scope="module")
def noisy_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """``(clean, noisy)``, ``(1, samples)`` each at 16 kHz."""
    clean = aio.load(SAMPLES / "speech_fr_16k_a.flac", sample_rate=16000, channels=1)[0]
    noisy = aio.load(NOISY, sample_rate=16000, channels=1)[0]
    length = min(clean.shape[-1], noisy.shape[-1])
    return clean[:, :length], noisy[:, :length]


@pytest.fixture(scope="module")
def versions() -> dict[int, Enhancer]:
    return {version: Enhancer.from_pretrained(f"enhance-16k@{version}") for version in OWN_CONFIG}


@pytest.mark.parametrize("version", sorted(OWN_CONFIG))
def test_each_version_loads_by_name_with_the_config_it_trained_with(versions, version):
    """The archive's weights (the file's sha256 is the archive's key) with the config written in full
    beside them, so that a later default cannot change what an old version computes (a new config field
    goes into each archived JSON with the value that keeps what that version computes)."""
    model = versions[version]
    path = resolve_weights(f"enhance-16k@{version}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VERSIONS[version] == model.weights_sha256()
    assert {key: getattr(model.config, key) for key in OWN_CONFIG[version]} == OWN_CONFIG[version]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert set(meta["config"]) == {f.name for f in dataclasses.fields(model.config)}
    assert meta["step"] == STEPS[version]


def test_the_newest_version_is_the_package_enhancer(versions):
    newest = max(VERSIONS)
    shipped = Enhancer.from_pretrained("enhance-16k")
    assert shipped.weights_sha256() == VERSIONS[newest] and shipped.config == CONFIGS["enhance-16k"]
    assert resolve_weights(f"enhance-16k@{newest}") == resolve_weights("enhance-16k")


@pytest.mark.parametrize("version", sorted(OWN_CONFIG))
def test_each_version_enhances_real_noisy_speech_as_when_it_shipped(versions, noisy_pair, version):
    """SI-SDR as the shipping commit's code gave it, at least 3 dB over the noisy input (the cards' paired
    gains on 400 clips: +3.6, +4.4 and +4.8 dB), and streaming equal to offline."""
    clean, noisy = noisy_pair
    model = versions[version]
    out = model.enhance(noisy[None])
    assert si_sdr(clean, out[0]) == pytest.approx(SHIPPED_SI_SDR[version], abs=0.01)
    assert si_sdr(clean, out[0]) > si_sdr(clean, noisy) + 3.0
    streamed = run_stream(model.stream(1), noisy[None], [160, 1000, 37])
    torch.testing.assert_close(streamed, out, atol=1e-5, rtol=0)


def test_enhance_info_and_eval_take_a_version_by_name(versions, noisy_pair, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert main(["enhance", str(NOISY), str(out), "-m", "enhance-16k@1"]) == 0
    summary = capsys.readouterr().out
    assert summary.rstrip().endswith("with enhance-16k@1"), summary  # not "... (an enhance-16k model)"
    expected = versions[1].enhance(aio.load(NOISY)[0][None])[0]
    assert (aio.load(out)[0] - expected).abs().max() <= 1 / 32768  # 16-bit output

    assert main(["info", "enhance-16k@1", "enhance-16k@2", "enhance-16k"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, version in zip(lines, (1, 2, 3), strict=True):
        assert f"enhancer weights, enhance-16k (enhance-16k@{version}, step {STEPS[version]})" in line

    for name, folder in (("speech_fr_16k_a.flac", "clean"), (NOISY.name, "noisy")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.flac").write_bytes((SAMPLES / name).read_bytes())
    folders = [str(tmp_path / "clean"), str(tmp_path / "noisy")]
    assert main(["eval", *folders, "-m", "enhance-16k@2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights_sha256"] == VERSIONS[2] and report["enhancer"] == "enhance-16k@2"
    assert report["si_sdr"] == pytest.approx(SHIPPED_SI_SDR[2], abs=0.01)


def test_bench_times_a_version_by_name_as_shipped_weights():
    model, kind = model_to_time(Enhancer, "enhance-16k@2")
    assert model.weights_sha256() == VERSIONS[2] and kind == "shipped"


def test_serve_serves_versions_by_name_side_by_side(versions):
    """Each stream gets the version it names: its output equals that version's offline output."""
    config = ServerConfig(models=["enhance-16k@1", "enhance-16k@2"])
    x = speech(1.0, 0.3)
    with running_server(config, load_engines(config)) as running:
        for version in (1, 2):
            name = f"enhance-16k@{version}"
            result = asyncio.run(client.stream(running.ws, [x[:7000], x[7000:]], 16000, model=name))
            expected = versions[version].enhance(torch.from_numpy(x)[None, None])[0, 0].numpy()
            assert result.audio.shape == x.shape and np.abs(result.audio - expected).max() < 1e-5, name


@pytest.mark.parametrize("version", sorted(OWN_CONFIG))
def test_each_version_has_a_card_with_its_weights_and_training_noise(version):
    """The card names the version's weights and, as its recipe mixed them in, the recorded noise and
    music it trained on by package and licence; an old version's card says how to load it by name and
    its Reproduce lines name the version (the bare name loads today's weights)."""
    newest = version == max(VERSIONS)
    stem = "enhance-16k" if newest else f"enhance-16k@{version}"
    card = json.loads((ROOT / "docs" / "models" / f"{stem}.json").read_text())
    markdown = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    assert card["weights"]["sha256"] == VERSIONS[version]
    recipe = yaml.safe_load(card["training"]["recipe_yaml"])
    weights = recipe["mixture"]["noise_weights"]
    listed = [entry["key"] for entry in card["training_data"]]
    recorded = weights.get("recorded", 0) > 0 or recipe["data"].get("noise_probability", 0) > 0
    assert ("data.noise" in listed) == recorded and ("data.music" in listed) == (weights.get("music", 0) > 0)
    for key in listed:
        assert f"`{key}` = `" in markdown
    if not newest:
        assert f'Enhancer.from_pretrained("enhance-16k@{version}")' in markdown
        assert card["weights"]["path"] == f"audiokit/weights/enhance-16k@{version}.safetensors"
        reproduce = markdown.split("## Reproduce")[1]
        assert "-m enhance-16k " not in reproduce and f"-m enhance-16k@{version} " in reproduce


@pytest.mark.parametrize("name", ["enhance-16k@9", "speech-16k@99"])
def test_info_on_a_version_never_shipped_says_so(name, capsys):
    assert main(["info", name]) == 1
    err = capsys.readouterr().err.strip()
    model, version = name.split("@")
    why = f"no shipped version '{version}' of '{model}' in the weights archive"
    assert err == f"audiokit info: error: {name}: {why}", err
