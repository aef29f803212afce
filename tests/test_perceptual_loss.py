"""The PESQ-style disturbance loss (:mod:`audiokit.losses.perceptual`): a naive numpy reference, the
properties PESQ has (masking, added noise costing more than removed speech), and its agreement with
PESQ-WB on real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiokit import io
from audiokit.evaluation.metrics import pesq
from audiokit.losses.perceptual import PesqStyleLoss
from tests.conftest import SAMPLES


def _naive(estimate: np.ndarray, target: np.ndarray, loss: PesqStyleLoss) -> float:
    """The loss of one ``(T,)`` pair, a loop over frames and bands in float64 numpy."""
    window, filters = loss.window.double().numpy(), loss.filters.double().numpy()
    n_fft, hop = loss.n_fft, loss.hop_length

    def band_power(x):
        x = np.pad(x, n_fft // 2, mode="reflect")
        frames = [x[i : i + n_fft] * window for i in range(0, len(x) - n_fft + 1, hop)]
        return np.array([filters @ np.abs(np.fft.rfft(f)) ** 2 for f in frames])

    est, ref = band_power(estimate), band_power(target)
    level = ref.mean()
    est, ref, p0, e = est / level, ref / level, loss.threshold, loss.exponent
    total = 0.0
    for t in range(len(ref)):
        sym, asym = [], []
        for b in range(ref.shape[1]):
            le, lr = (est[t, b] + p0) ** e - p0**e, (ref[t, b] + p0) ** e - p0**e
            masked = max(abs(le - lr) - loss.deadzone * min(le, lr), 0.0)
            ratio = ((est[t, b] + p0) / (ref[t, b] + p0)) ** 1.2
            sym.append(masked**3)
            asym.append(masked * (min(ratio, 12.0) if ratio >= 3.0 else 0.0))
        total += 0.1 * np.mean(sym) ** (1 / 3) + 0.0309 * np.mean(asym)
    return total / len(ref)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    clean, _ = io.load(SAMPLES / "speech_fr_16k_a.flac", sample_rate=16000, channels=1)
    return clean[:, :24000]


def test_equals_a_naive_loop(speech):
    loss = PesqStyleLoss()
    noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(0)) * speech.std() * 0.3
    estimate = speech * 0.8 + noise
    expected = _naive(estimate[0].double().numpy(), speech[0].double().numpy(), loss)
    assert float(loss(estimate[None], speech[None])) == pytest.approx(expected, rel=1e-4)


def test_masking_and_asymmetry(speech):
    loss = PesqStyleLoss()
    assert float(loss(speech[None], speech[None])) == 0.0
    assert float(loss(speech[None] * 1.02, speech[None])) == 0.0  # below the masking threshold
    noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(1)) * speech.std() * 0.3
    added = float(loss((speech + noise)[None], speech[None]))
    # the same error removed from the reference instead of added to the estimate
    removed = float(loss(speech[None], (speech + noise)[None]))
    assert added > 2 * removed > 0
    x = (speech + noise)[None].clone().requires_grad_()
    loss(x, speech[None]).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ranks_noisy_speech_as_pesq_does(speech):
    loss, rng = PesqStyleLoss(), torch.Generator().manual_seed(2)
    noise = torch.randn(speech.shape, generator=rng) * speech.std()
    losses, scores = [], []
    for snr in (30, 20, 10, 5, 0):
        noisy = speech + noise * 10 ** (-snr / 20)
        losses.append(float(loss(noisy[None], speech[None])))
        scores.append(pesq(speech[0].numpy(), noisy[0].numpy(), 16000).score)
    assert np.all(np.diff(losses) > 0) and np.all(np.diff(scores) < 0)
