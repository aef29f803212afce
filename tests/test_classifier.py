"""AudioClassifier: the `frontend:` option builds every front end, and the model really learns."""

from __future__ import annotations

import math

import pytest
import torch

from audiokit.errors import UsageError
from audiokit.frontends import FRONTENDS
from audiokit.models import AudioClassifier


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_every_frontend_builds_and_groups_unit_parameters(frontend):
    options = {"banks": ("mel", "gabor"), "filter_length": 129} if frontend == "adaptive" else {}
    model = AudioClassifier(3, 16000, frontend=frontend, **options)
    assert model(torch.randn(2, 8000)).shape == (2, 3)
    rest, unit = model.parameter_groups(1e-3, 1.0)
    assert rest["lr"] == 1e-3 and unit["lr"] == 1.0
    if frontend == "diffstft":
        assert any(p is model.frontend.stft.win_length for p in unit["params"])
    if frontend in ("mel", "stft"):
        assert unit["params"] == []


def test_bad_options_and_inputs_too_short_for_a_frame_are_usage_errors():
    """One-line UsageErrors, as build_frontend's (an unknown front end was a ValueError; n_classes -1 or
    width 0 failed inside torch; the adaptive front end's zero frames failed in a conv)."""
    with pytest.raises(UsageError, match="frontend: unknown name 'wavelet'; choose one of"):
        AudioClassifier(2, 16000, frontend="wavelet")
    for options, name in (({"n_classes": -1}, "n_classes"), ({"width": 0}, "width")):
        with pytest.raises(UsageError, match=f"AudioClassifier: {name} must be a whole number >= 1"):
            AudioClassifier(**{"n_classes": 2, "sample_rate": 16000, **options})
    model = AudioClassifier(2, 16000, frontend="adaptive", banks=("mel",), filter_length=129)
    with pytest.raises(UsageError, match="100 samples give no frame of the 'adaptive' front end; .* 160"):
        model(torch.randn(2, 100))
    assert model(torch.randn(2, 160)).shape == (2, 2)


def test_learns_low_from_high_tones():
    torch.manual_seed(0)
    t = torch.arange(4000) / 16000

    def batch(n):
        labels = torch.randint(0, 2, (n,))
        freqs = torch.where(labels == 0, 300.0, 3000.0) * (1 + 0.2 * torch.rand(n))
        x = torch.sin(2 * math.pi * freqs[:, None] * t) + 0.3 * torch.randn(n, t.shape[0])
        return x, labels

    model = AudioClassifier(2, 16000, frontend="mel", width=16)
    opt = torch.optim.Adam(model.parameter_groups(3e-3, 1.0))
    for _ in range(40):
        x, y = batch(16)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = batch(64)
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.9
