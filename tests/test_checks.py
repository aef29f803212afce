"""`whole_number`: the one check of the Python API's counts (batch sizes, channels, FFT sizes, hops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.frontends import DiffSTFT
from audiokit.streaming.audio import AudioStream

INTEGERS = [3, np.int64(3), np.uint8(3), torch.tensor(3), torch.tensor(3, dtype=torch.int16)]
NOT_WHOLE = [
    True, np.True_, torch.tensor(True), 3.0, np.float32(3), torch.tensor(3.0), torch.tensor([3]), "3", None
]


@pytest.mark.parametrize("value", INTEGERS)
def test_integers_of_every_library_are_taken(value):
    assert whole_number(value, "x") == 3 and type(whole_number(value, "x")) is int


@pytest.mark.parametrize("value", NOT_WHOLE)
def test_bools_floats_strings_and_arrays_are_refused(value):
    with pytest.raises(UsageError, match=r"^x must be a whole number >= 1, got "):
        whole_number(value, "x")


def test_the_bound_and_its_unit_are_said():
    assert whole_number(4, "n_fft", minimum=4) == 4
    with pytest.raises(UsageError, match=r"^n_fft must be a whole number >= 4 samples, got 3$"):
        whole_number(3, "n_fft", minimum=4, unit=" samples")


def test_the_classes_take_and_refuse_the_same_values():
    """Each class had its own check: AudioStream took True as one stream and refused torch integers,
    the batchers took torch integers; DiffSTFT refused torch integers too."""
    assert DiffSTFT(n_fft=torch.tensor(256), win_length=200, hop_length=100).n_fft == 256
    with pytest.raises(UsageError, match="batch_size must be a whole number >= 1, got True"):
        AudioStream(None, batch_size=True)


def test_front_ends_take_torch_integers_as_ints():
    """The checks took torch integers but the front ends kept the tensors: build_frontend("mel",
    torch.tensor(16000)) failed in round(), "adaptive" in a numpy product, n_fft=torch.tensor(512) in the
    mel filterbank, and AdaptiveFilterbank's n_features stayed a tensor."""
    from audiokit.frontends import build_frontend

    x = torch.randn(1, 4000)
    for name in ("mel", "adaptive", "stft"):
        module = build_frontend(name, torch.tensor(16000), hop_length=torch.tensor(160))
        assert type(module.n_features) is int and module(x).shape[-1] >= 25, name
    assert build_frontend("mel", 16000, n_fft=torch.tensor(512), n_bands=np.int64(40)).n_features == 40
