"""Saving and loading models of every family: file names, clear one-line errors for files that do not
fit, and what a loaded model holds."""

from __future__ import annotations

import pytest
import torch

from audiokit.models import Enhancer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_enhancer() -> Enhancer:
    torch.manual_seed(0)
    return Enhancer.from_config("enhance-16k", hidden_dim=16).eval()


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
