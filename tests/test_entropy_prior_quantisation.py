"""The quantisation of the trained causal prior (``benchmarks/entropy_models.py``): the float twin on the
integer grid is the integer prior's network, and tuned exponents buy resolution past a rare outlier."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "entropy_models.py"


@pytest.fixture(scope="module")
def em():
    spec = importlib.util.spec_from_file_location("entropy_models_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markov_codes(frames: int, stages: int, size: int, seed: int) -> np.ndarray:
    """Codes that repeat the previous frame's code half the time: a prior can learn something."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, size, (frames, stages))
    for t in range(1, frames):
        keep = rng.random(stages) < 0.5
        codes[t, keep] = codes[t - 1, keep]
    return codes


def _trained(em, codes: np.ndarray, size: int, steps: int = 150):
    torch.manual_seed(0)
    model = em.FloatPrior(codes.shape[1], size, 2, 8, 16)
    pos = torch.from_numpy(em.chunk_positions(np.asarray([len(codes)])))
    data = torch.from_numpy(codes)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(data), (256,), generator=generator)
        window, p = em.windows(data, pos, index, model.lags)
        logits = model(window, p)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, size), window[:, -1].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def test_the_float_twin_on_the_grid_is_the_integer_priors_network(em):
    size = 32
    codes = _markov_codes(2000, 3, size, seed=1)
    model = _trained(em, codes, size)
    lengths = np.asarray([50] * 40)
    pos = em.chunk_positions(lengths)
    exps = em.peak_exponents(model)
    prior, twin = em.quantise(model, 15, 5, exps), em.fake_quantised(model, exps)
    float_bits = np.mean(em.float_bits(twin, codes, pos))
    chunks, mask = em.chunks_of(codes, lengths)
    integer_bits = np.mean(em.integer_bits(prior, chunks, mask))
    assert float_bits < np.log2(size) - 0.5  # it learned the repeats
    assert abs(integer_bits - float_bits) < 0.02  # activations and frequency tables cost next to nothing

    with torch.no_grad():
        model.out[0, 0, 0] = 40 * model.out.abs().max()  # an outlier that a finer exponent clips
    exps = em.peak_exponents(model) | {"out": em.peak_exponents(model)["out"] + 3}
    prior, twin = em.quantise(model, 15, 5, exps), em.fake_quantised(model, exps)
    for name in em.INT8_TABLES:
        stored = prior.tensors[name].astype(np.float64) / 2.0 ** prior.config[f"{name}_exp"]
        np.testing.assert_array_equal(stored, getattr(twin, name).detach().double().numpy())
    assert prior.tensors["out"][0, 0, 0] == 127  # clipped, not wrapped


def test_tuned_exponents_clip_a_rare_outlier_and_save_bits(em):
    size = 32
    codes = _markov_codes(3000, 3, size, seed=2)
    model = _trained(em, codes, size)
    with torch.no_grad():
        model.prev[0, 1, 3, 2] = 60 * model.prev.abs().max()  # one entry, almost never looked up
    lengths = np.asarray([50] * 60)
    pos = em.chunk_positions(lengths)
    peak = em.peak_exponents(model)
    tuned = em.tune_exponents(model, codes, pos)
    assert tuned["prev"] > peak["prev"]
    peak_bits = np.mean(em.float_bits(em.fake_quantised(model, peak), codes, pos))
    tuned_bits = np.mean(em.float_bits(em.fake_quantised(model, tuned), codes, pos))
    assert tuned_bits < peak_bits - 0.01


def test_quantisation_aware_steps_lower_the_bits_on_a_coarse_grid(em):
    size = 32
    codes = _markov_codes(3000, 3, size, seed=3)
    model = _trained(em, codes, size)
    lengths = np.asarray([50] * 60)
    pos = em.chunk_positions(lengths)
    coarse = {name: exp - 3 for name, exp in em.peak_exponents(model).items()}  # 16 levels a table
    before = np.mean(em.float_bits(em.fake_quantised(model, coarse), codes, pos))
    model = em.quantisation_aware(model, coarse, codes, pos, steps=150, lr=1e-2, batch=256, seed=0)
    after = np.mean(em.float_bits(em.fake_quantised(model, coarse), codes, pos))
    print(f"{before:.3f} -> {after:.3f} bits")
    assert after < before - 0.05
