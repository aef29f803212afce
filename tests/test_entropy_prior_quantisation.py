"""The quantisation of the trained causal prior (``benchmarks/entropy_models.py``): the float twin on the
integer grid is the integer prior's network, tuned exponents buy resolution past a rare outlier, and
quantisation-aware steps recover what a coarse grid costs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_benchmark


@pytest.fixture(scope="module")
def em():
    return load_benchmark("entropy_models")


def _markov_codes(frames: int, stages: int, size: int, seed: int) -> np.ndarray:
    """Codes that repeat the previous frame's code half the time: a prior can learn something."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, size, (frames, stages))
    for t in range(1, frames):
        keep = rng.random(stages) < 0.5
        codes[t, keep] = codes[t - 1, keep]
    return codes


def _trained(em, frames: int, seed: int):
    """A small prior trained on Markov codes (3 stages of 32 codes) of ``frames`` frames in chunks of 50,
    and the codes and positions."""
    codes = _markov_codes(frames, 3, 32, seed)
    pos = em.chunk_positions(np.asarray([50] * (frames // 50)))
    model = em.train_prior(codes, pos, _settings(codebook_size=32, epochs=150 * 256 / frames))
    return model, codes, pos


def _settings(**changes) -> SimpleNamespace:
    """What :func:`train_prior` reads of the command line: a small prior, ``changes`` applied."""
    settings = dict(
        seed=0,
        lags=2,
        width=8,
        hidden=16,
        lr=3e-2,
        weight_decay=0.0,
        init_float=None,
        context_dropout=0.0,
        batch=256,
    )
    return SimpleNamespace(**(settings | changes))


def _bits(em, model, exps, codes, pos) -> float:
    """Bits a code of ``model`` with its weights on the grid of ``exps``."""
    return float(np.mean(em.float_bits(em.fake_quantised(model, exps), codes, pos)))


def test_the_float_twin_on_the_grid_is_the_integer_priors_network(em):
    model, codes, pos = _trained(em, 2000, seed=1)
    exps = em.peak_exponents(model)
    prior = em.quantise(model, 15, 5, exps)
    chunks, mask = em.chunks_of(codes, np.asarray([50] * 40))
    integer_bits = np.mean(em.integer_bits(prior, chunks, mask))
    float_bits = _bits(em, model, exps, codes, pos)
    print(f"float on the grid {float_bits:.4f}, integer {integer_bits:.4f} bits a code")
    assert float_bits < np.log2(32) - 0.5  # it learned the repeats
    assert abs(integer_bits - float_bits) < 0.02  # activations and frequency tables cost next to nothing

    with torch.no_grad():
        model.out[0, 0, 0] = 40 * model.out.abs().max()  # an outlier that a finer exponent clips
    exps = exps | {"out": em.peak_exponents(model)["out"] + 3}
    prior, twin = em.quantise(model, 15, 5, exps), em.fake_quantised(model, exps)
    for name in em.INT8_TABLES:
        stored = prior.tensors[name].astype(np.float64) / 2.0 ** prior.config[f"{name}_exp"]
        np.testing.assert_array_equal(stored, getattr(twin, name).detach().double().numpy())
    assert prior.tensors["out"][0, 0, 0] == 127  # clipped, not wrapped


def test_tuned_exponents_clip_a_rare_outlier_and_save_bits(em):
    model, codes, pos = _trained(em, 3000, seed=2)
    with torch.no_grad():
        model.prev[0, 1, 3, 2] = 60 * model.prev.abs().max()  # one entry, almost never looked up
    peak, tuned = em.peak_exponents(model), em.tune_exponents(model, codes, pos)
    assert tuned["prev"] > peak["prev"]
    peak_bits, tuned_bits = _bits(em, model, peak, codes, pos), _bits(em, model, tuned, codes, pos)
    print(f"peak exponents {peak_bits:.3f}, tuned {tuned_bits:.3f} bits a code")
    assert tuned_bits < peak_bits - 0.01


def test_quantisation_aware_steps_lower_the_bits_on_a_coarse_grid(em):
    model, codes, pos = _trained(em, 3000, seed=3)
    coarse = {name: exp - 3 for name, exp in em.peak_exponents(model).items()}  # 16 levels a table
    before = _bits(em, model, coarse, codes, pos)
    model = em.quantisation_aware(model, coarse, codes, pos, steps=150, lr=1e-2, batch=256, seed=0)
    after = _bits(em, model, coarse, codes, pos)
    print(f"{before:.3f} -> {after:.3f} bits a code")
    assert after < before - 0.05


def test_a_prior_grown_to_more_lags_starts_where_the_trained_one_ends(em):
    model, codes, pos = _trained(em, 2000, seed=4)
    grown = em.grown_from(em.FloatPrior(3, 32, lags=4, width=8, hidden=16), model.state_dict()).eval()
    before, after = em.float_bits(model, codes, pos), em.float_bits(grown, codes, pos)
    np.testing.assert_allclose(after, before, rtol=1e-6)
    assert np.mean(before) < np.log2(32) - 0.5  # the trained prior learned something to keep
    with pytest.raises(ValueError, match="more than"):
        em.grown_from(em.FloatPrior(3, 32, lags=1, width=8, hidden=16), model.state_dict())


def _ring_geometry(size: int, stages: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codewords on a circle (code ``k`` at angle ``2 pi k / size``), as latents of 6 values and words
    of 2: neighbouring codes lie close together."""
    angle = 2 * np.pi * torch.arange(size) / size
    words = torch.stack([angle.cos(), angle.sin()], -1).expand(stages, -1, -1).clone()
    latents = torch.cat([words, 2 * words, -words], -1)
    return latents, words


def _ring_walk(frames: int, size: int, step: float, seed: int) -> np.ndarray:
    """One stage of codes that move round the ring by a rounded normal step of ``step`` codes' spread."""
    rng = np.random.default_rng(seed)
    moves = np.rint(rng.normal(0, step, frames)).astype(np.int64)
    return (np.cumsum(moves) % size)[:, None]


def test_a_geometric_prior_hands_over_the_plain_prior_that_computes_the_same(em):
    latents, words = _ring_geometry(32, 3)
    model = em.GeometricPrior(latents, words, lags=2, width=8, hidden=16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.eval()
    codes, pos = torch.randint(0, 32, (300, 3)), torch.arange(300) % 50
    window, p = em.windows(codes, pos, torch.arange(300), 2)
    plain = model.plain()
    assert type(plain) is em.FloatPrior
    torch.testing.assert_close(plain(window, p), model(window, p), rtol=1e-5, atol=1e-5)
    exps = em.peak_exponents(plain)  # and it quantises as any prior
    chunks, mask = em.chunks_of(codes.numpy(), np.asarray([50] * 6))
    integer = np.mean(em.integer_bits(em.quantise(plain, 15, 5, exps), chunks, mask))
    assert abs(integer - _bits(em, plain, exps, codes.numpy(), pos.numpy())) < 0.02


def test_a_geometric_prior_learns_from_fewer_codes_where_neighbours_share(em):
    """A walk over 128 codes on a ring, 1,500 frames to learn from (each code ~12 times as the context):
    the free prior must learn every code's neighbours one by one, the geometric one knows which codes
    lie next to each other. On another walk the geometric prior is closer to the walk's entropy."""
    size = 128
    train, valid = _ring_walk(1500, size, 6.0, seed=0), _ring_walk(3000, size, 6.0, seed=1)
    train_pos, valid_pos = (em.chunk_positions(np.asarray([50] * (len(c) // 50))) for c in (train, valid))
    settings = _settings(
        codebook_size=size, lags=1, lr=1e-2, weight_decay=0.05, epochs=300 * 256 / len(train)
    )
    free = em.train_prior(train, train_pos, settings)
    geometric = em.train_prior(train, train_pos, settings, _ring_geometry(size, 1))
    free_bits = float(np.mean(em.float_bits(free, valid, valid_pos)))
    geometric_bits = float(np.mean(em.float_bits(geometric, valid, valid_pos)))
    print(f"another walk: free {free_bits:.3f}, geometric {geometric_bits:.3f} bits a code (entropy ~4.6)")
    assert geometric_bits < free_bits - 0.3
    assert geometric_bits < 5.2  # the walk itself: ~4.6 bits a code; uniform: 7
