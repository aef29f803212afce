"""Saving and loading models of every family: file names, clear one-line errors for files that do not
fit, and what a loaded model holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from audiokit.errors import ModelError
from audiokit.models import CONFIGS, AudioModel, BandwidthExtender, Codec, Enhancer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_enhancer() -> Enhancer:
    torch.manual_seed(0)
    return Enhancer.from_config("enhance-16k", hidden_dim=16).eval()


def with_weights(saved: Path, folder: Path, blob: bytes, **meta_changes) -> Path:
    """A copy of the saved model ``saved`` in ``folder`` whose weights file holds ``blob``, with a JSON
    that names that file's sha256 (what a converter that writes its own JSON leaves) and ``meta_changes``."""
    folder.mkdir()
    meta = json.loads(saved.with_suffix(".json").read_text())
    meta.update(sha256=hashlib.sha256(blob).hexdigest(), **meta_changes)
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.safetensors").write_bytes(blob)
    return folder / "model.safetensors"


def load_error(path: Path, match: str, family: type = Enhancer) -> str:
    """The one-line ModelError of ``family.from_pretrained(path)``, which must match ``match``."""
    with pytest.raises(ModelError, match=match) as info:
        family.from_pretrained(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_save_pretrained_adds_the_suffix_instead_of_replacing_one(tmp_path, small_enhancer):
    """A dotted name (``model.step100``) keeps its dot: the weights go to ``model.step100.safetensors``,
    not over ``model.safetensors`` (another model's file)."""
    other = small_enhancer.save_pretrained(tmp_path / "model.safetensors")
    before = other.read_bytes()
    saved = small_enhancer.save_pretrained(tmp_path / "model.step100", extra={"step": 100})
    assert saved == tmp_path / "model.step100.safetensors"
    assert (tmp_path / "model.step100.json").is_file()
    assert other.read_bytes() == before
    assert small_enhancer.save_pretrained(tmp_path / "cfg.json") == tmp_path / "cfg.safetensors"
    assert Enhancer.from_pretrained(saved).weights_sha256() == small_enhancer.weights_sha256()


def test_from_pretrained_takes_the_path_given_to_save_pretrained(tmp_path, small_enhancer):
    for given in (tmp_path / "mine", tmp_path / "model.step100", str(tmp_path / "model.step100")):
        small_enhancer.save_pretrained(given)
        loaded = Enhancer.from_pretrained(given)
        assert loaded.config == small_enhancer.config
        assert loaded.weights_sha256() == small_enhancer.weights_sha256()


def test_save_pretrained_into_an_existing_folder_writes_inside_it(tmp_path, small_enhancer):
    """``save_pretrained(folder)`` then ``from_pretrained(folder)`` is the round trip; the weights used to
    go beside the folder (``folder.safetensors``, outside it) and loading the folder found none."""
    folder = tmp_path / "saved"
    folder.mkdir()
    assert small_enhancer.save_pretrained(folder) == folder / "model.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    for given in (folder, str(folder)):
        assert Enhancer.from_pretrained(given).weights_sha256() == small_enhancer.weights_sha256()


def test_malformed_weights_whose_sha256_the_json_names_are_a_model_error(tmp_path, small_enhancer):
    """The sha256 catches a file damaged after saving; a file that was malformed when its JSON was
    written (truncated, empty, not safetensors) is a one-line ModelError too, not safetensors' own."""
    saved = small_enhancer.save_pretrained(tmp_path / "model.safetensors")
    blobs = {"truncated": saved.read_bytes()[:100], "empty": b"", "text": b"not a safetensors file at all"}
    for label, blob in blobs.items():
        path = with_weights(saved, tmp_path / label, blob)
        assert str(path) in load_error(path, "not a valid safetensors")


def test_weights_of_another_dtype_are_refused_not_cast(tmp_path, small_enhancer):
    """Strict loading covers dtypes as well as names and shapes: float16 or integer tensors where the
    model holds float32 ones are a one-line ModelError naming the tensor, not a silent cast."""
    saved = small_enhancer.save_pretrained(tmp_path / "model.safetensors")
    state = safetensors.torch.load(saved.read_bytes())
    for label, dtype in (("half", torch.float16), ("double", torch.float64), ("integer", torch.int64)):
        blob = safetensors.torch.save({key: value.to(dtype) for key, value in state.items()})
        path = with_weights(saved, tmp_path / label, blob)
        name = str(dtype).removeprefix("torch.")
        assert str(path) in load_error(path, f"is {name} but config 'enhance-16k' holds float32")


@pytest.mark.parametrize("version", ["1", None, 1.5, [1], 2])
def test_a_format_version_that_is_not_a_known_integer_is_a_model_error(tmp_path, small_enhancer, version):
    saved = small_enhancer.save_pretrained(tmp_path / "model.safetensors")
    path = with_weights(saved, tmp_path / "odd", saved.read_bytes(), format_version=version)
    assert str(path.with_suffix(".json")) in load_error(path, "unsupported format 'audiokit-enhancer'")


@pytest.mark.parametrize("change", [{"hidden_dim": -3}, {"hop_length": 0}, {"sample_rate": 0}])
def test_a_config_that_makes_no_model_is_a_model_error(tmp_path, small_enhancer, change):
    """Values of the right type that no model has (a negative width, a hop of 0) are a one-line
    ModelError naming the JSON, from from_pretrained and from_config alike."""
    saved = small_enhancer.save_pretrained(tmp_path / "model.safetensors")
    config = {**small_enhancer.config.to_dict(), **change}
    path = with_weights(saved, tmp_path / "odd", saved.read_bytes(), config=config)
    assert str(path.with_suffix(".json")) in load_error(path, "does not make an enhancer model")
    with pytest.raises(ModelError, match="enhancer config 'enhance-16k'.*does not make an enhancer model"):
        Enhancer.from_config("enhance-16k", **change)


@pytest.mark.parametrize(
    ("family", "name"), [(Codec, "speech-16k"), (Enhancer, "enhance-16k"), (BandwidthExtender, "bwe-8to16")]
)
def test_every_family_has_the_shared_interface(family, name):
    """DESIGN.md §3: sample_rate, channels, hop_length, frame_rate, algorithmic_latency (samples) and
    stream() on every model, and they agree with each other."""
    model = family.from_config(name)
    assert isinstance(model, AudioModel) and model.family == family.family and model.name == name
    assert model.sample_rate == 16000 and model.channels == 1
    assert model.hop_length > 0 and model.frame_rate == model.sample_rate / model.hop_length
    assert model.algorithmic_latency >= model.hop_length
    options = {"edge_hz": 4000.0} if family is BandwidthExtender else {}
    assert model.stream(2, **options) is not None


def test_a_models_config_is_its_own():
    """Changing a model's config (a nested field included) changes neither the registered config nor
    the next model built from it: each model holds its own copy."""
    codec = Codec.from_config("speech-16k")
    codec.config.encoder.hidden_dim = 64
    codec.config.decoder.n_blocks = 1
    assert CONFIGS["speech-16k"].encoder.hidden_dim == 192 and CONFIGS["speech-16k"].decoder.n_blocks == 6
    again = Codec.from_config("speech-16k")
    assert again.config == CONFIGS["speech-16k"] and len(again.decoder.blocks) == 6


def test_from_pretrained_loads_archived_versions_by_name_at_version():
    """``name@version`` names an archived shipped version for every loader, not only the CLI's: the
    installed one loads, one whose files are not installed says how to get them, and an unknown version
    or a family mismatch is a one-line ModelError."""
    shipped = Codec.from_pretrained("speech-16k")
    archive = json.loads((Path(__file__).parents[1] / "audiokit/weights/ARCHIVE.json").read_text())
    versions = {e["version"]: e for e in archive["weights"].values() if e["model"] == "speech-16k"}
    current = max(versions)
    assert Codec.from_pretrained(f"speech-16k@{current}").weights_sha256() == shipped.weights_sha256()
    assert AudioModel.from_pretrained(f"speech-16k@{current}").family == "codec"
    with pytest.raises(ModelError, match=r"speech-16k@1 weights sha256 .* are not installed .*git show"):
        Codec.from_pretrained("speech-16k@1")
    with pytest.raises(ModelError, match=r"speech-16k@99: no shipped version '99' of 'speech-16k'"):
        Codec.from_pretrained("speech-16k@99")
    with pytest.raises(ModelError, match="a codec model, not an enhancer"):
        Enhancer.from_pretrained(f"speech-16k@{current}")
