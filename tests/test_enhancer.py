"""The enhancer: spectral blocks against numpy, streaming == offline, knobs, lengths, silence."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from audiokit.errors import UsageError
from audiokit.models.enhancer import CONFIGS, Enhancer, mix_factor
from audiokit.nn.band_conv import BandEncoder
from audiokit.nn.spectral import CausalInverseSpectrum, CausalSpectrum, DeepFilter

ANALYSES = {
    "plain": {"pitch": False},
    "shipped": {},
    "version_1": {"low_band_features": True, "band_norm_frames": 0},
    "noise_floor": {"noise_floor_rise": (5.0, 20.0)},
    "band_conv": {"band_encoder": "conv", "noise_floor_rise": (5.0, 20.0)},
    "no_low_band": {"low_band_features": False},
    "band_conv_no_low_band": {"band_encoder": "conv", "low_band_features": False},
    "band_norm": {"band_norm_frames": 50},
    "band_conv_band_norm": {"band_encoder": "conv", "band_norm_frames": 50},
    "no_pitch_lag": {"pitch_lag_feature": False, "band_norm_frames": 50, "low_band_features": False},
    "band_conv_no_pitch_lag": {"band_encoder": "conv", "pitch_lag_feature": False},
}


@pytest.fixture(scope="module", params=list(ANALYSES))
def enhancer(request) -> Enhancer:
    torch.manual_seed(0)
    model = Enhancer(replace(CONFIGS["enhance-16k"], **ANALYSES[request.param])).eval()
    with torch.no_grad():  # random but far from pass-through, so the checks see the network act
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_causal_spectrum_matches_numpy_frames():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    spec = CausalSpectrum(320, 160)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    padded = np.concatenate([np.zeros(160), x, np.zeros((-1000) % 160 + 160)])
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(320) / 320))
    frames = [padded[m * 160 : m * 160 + 320] * window for m in range((len(padded) - 320) // 160 + 1)]
    reference = np.fft.rfft(np.array(frames), axis=-1).T
    assert spec.shape == reference.shape == (161, 8)
    np.testing.assert_allclose(spec, reference, atol=1e-4)


@pytest.mark.parametrize("length", [1, 159, 160, 4801])
def test_analysis_synthesis_reconstructs(length):
    x = torch.randn(2, 1, length)
    y = CausalInverseSpectrum(320, 160)(CausalSpectrum(320, 160)(x), length)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_deep_filter_matches_a_loop():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 9, dtype=torch.complex64)
    coef = torch.randn(2, 5, 9, 3, dtype=torch.complex64)
    y = DeepFilter(5, 3)(x, coef)
    expected = torch.zeros_like(x)
    for m in range(9):
        for k in range(3):
            if m - k >= 0:
                expected[..., m] += coef[..., m, k] * x[..., m - k]
    torch.testing.assert_close(y, expected)
    block, state, pieces = DeepFilter(5, 3), DeepFilter(5, 3).init_state(2, x.device, torch.float32), []
    for start, stop in ((0, 1), (1, 5), (5, 6), (6, 9)):  # chunks of 1, 4, 1 and 3 frames
        pieces.append(block.step((x[..., start:stop], coef[..., start:stop, :]), state))
    torch.testing.assert_close(torch.cat(pieces, -1), expected)


def _streamed(model: Enhancer, x: torch.Tensor, chunks: list[int], **options) -> torch.Tensor:
    session = model.stream(x.shape[0], channels=x.shape[1], **options)
    outs, pos = [], 0
    for size in chunks:
        outs.append(session.push(x[..., pos : pos + size]))
        pos += size
    outs.append(session.push(x[..., pos:]))
    outs.append(session.flush())
    return torch.cat(outs, -1)


@settings(max_examples=15, deadline=None)
@given(
    length=st.integers(1, 3000),
    chunks=st.lists(st.integers(0, 700), max_size=8),
    seed=st.integers(0, 2**16),
    atten=st.sampled_from([None, 6.0]),
)
def test_streaming_equals_offline(enhancer, length, chunks, seed, atten):
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    offline = enhancer.enhance(x, atten_lim_db=atten)
    streamed = _streamed(enhancer, x, chunks, atten_lim_db=atten)
    assert streamed.shape == offline.shape == x.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_reset_rows_restarts_one_stream(enhancer):
    x = torch.randn(2, 1, 2000) * 0.3
    session = enhancer.stream(2)
    session.push(torch.randn(2, 1, 777))
    session.reset([1])
    pushed = session.push(x)  # what both rows have ready
    out = torch.cat([pushed, session.flush()], -1)
    assert pushed.shape[-1] + session.lengths[1] == 2000
    torch.testing.assert_close(out[1:, :, :2000], enhancer.enhance(x[1:]), atol=1e-5, rtol=0)


def test_state_dict_moves_live_streams_to_another_session(enhancer):
    """A session's ``state_dict``, saved and read back with ``weights_only``, continues its streams in a
    fresh session exactly as offline (every analysis' state, buffers and counters moved); a session of
    other options or rows refuses it."""
    x = torch.randn(2, 1, 4000) * 0.3
    first = enhancer.stream(2, atten_lim_db=20.0)
    head = first.push(x[..., :1234])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = enhancer.stream(2, atten_lim_db=20.0)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    out = torch.cat([head, second.push(x[..., 1234:2999]), second.push(x[..., 2999:]), second.flush()], -1)
    torch.testing.assert_close(out, enhancer.enhance(x, atten_lim_db=20.0), atol=1e-5, rtol=0)
    for other in (enhancer.stream(2), enhancer.stream(1, atten_lim_db=20.0)):
        with pytest.raises(UsageError, match="does not fit"):
            other.load_state_dict(first.state_dict())


def test_knobs(enhancer):
    x = torch.randn(1, 2, 3200) * 0.3
    torch.testing.assert_close(enhancer.enhance(x, dry=1.0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(enhancer.enhance(x, atten_lim_db=0.0), x, atol=1e-5, rtol=0)
    wet, dry = enhancer.enhance(x), x
    half = enhancer.enhance(x, dry=0.5)
    torch.testing.assert_close(half, 0.5 * wet + 0.5 * dry, atol=1e-5, rtol=0)
    assert mix_factor(20.0, 0.0) == pytest.approx(0.1)
    with pytest.raises(UsageError, match=r"dry must be in \[0, 1\], got 1.5"):
        mix_factor(None, 1.5)


def test_silence_in_silence_out_and_lengths(enhancer):
    for length in (1, 160, 16001):
        y = enhancer.enhance(torch.zeros(1, 1, length))
        assert y.shape == (1, 1, length)
        assert float(y.abs().max()) == 0.0
    loud = enhancer.enhance(torch.full((1, 1, 3200), 1.0))  # DC at full scale: finite
    assert torch.isfinite(loud).all()


@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_budget_and_latency(analysis):
    model = Enhancer(replace(CONFIGS["enhance-16k"], **ANALYSES[analysis]))
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert model.multiply_adds_per_second() <= 100e6
    assert model.algorithmic_latency / model.sample_rate <= 0.020


def test_dropout_acts_in_training_only():
    """``dropout`` drops features while training; evaluation and streaming are the model without it."""
    torch.manual_seed(0)
    plain = Enhancer(CONFIGS["enhance-16k"])
    dropped = Enhancer(replace(CONFIGS["enhance-16k"], dropout=0.5))
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 3200) * 0.3
    with torch.no_grad():
        first, second = dropped.train()(x), dropped(x)
        assert not torch.allclose(first, second)  # a new mask each call
        assert not torch.allclose(first, plain.train()(x))
        torch.testing.assert_close(dropped.eval()(x), plain.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="dropout"):
        replace(CONFIGS["enhance-16k"], dropout=1.0)


def test_band_encoder_moves_its_features_with_the_bands():
    """A pattern moved up by some bands gives the same encoded features moved (away from the edges)."""
    torch.manual_seed(0)
    encoder = BandEncoder(3, 8)
    x = torch.zeros(2, 5, 3, 32)
    x[..., 4:20] = torch.randn(2, 5, 3, 16)
    moved = torch.roll(x, 6, -1)
    torch.testing.assert_close(encoder(moved)[..., 6 + 2 : 26 - 2], encoder(x)[..., 2:18], atol=1e-6, rtol=0)
    assert not torch.allclose(encoder(moved), encoder(x))


def test_without_low_band_features_the_network_reads_only_band_analysis():
    """``low_band_features=False``: the input map is narrower by the low band's ``2 df_bins`` columns, and
    the stated cost falls by exactly their multiply-adds."""
    with_low = Enhancer(replace(CONFIGS["enhance-16k"], low_band_features=True))
    without = Enhancer(replace(CONFIGS["enhance-16k"], low_band_features=False))
    c = with_low.config
    assert with_low.input_proj.in_features - without.input_proj.in_features == 2 * c.df_bins
    saved = with_low.multiply_adds_per_second() - without.multiply_adds_per_second()
    assert saved == pytest.approx(2 * c.df_bins * c.hidden_dim * c.sample_rate / c.hop_length)


def test_conv_band_encoder_cost_matches_a_flop_count():
    """What the band convolutions add to :meth:`Enhancer.multiply_adds_per_second` is what torch counts
    in one second of audio (one frame more: the analysis pads)."""
    counted, stated = {}, {}
    for encoder in ("linear", "conv"):
        model = Enhancer(replace(CONFIGS["enhance-16k"], band_encoder=encoder)).eval()
        with FlopCounterMode(display=False) as flops:
            model.enhance(torch.randn(1, 1, 16000))
        counted[encoder], stated[encoder] = flops.get_total_flops() / 2, model.multiply_adds_per_second()
    ratio = (counted["conv"] - counted["linear"]) / (stated["conv"] - stated["linear"])
    assert 1.0 <= ratio <= 1.02


def test_batched_streams_with_different_silence_equal_each_alone_offline(enhancer):
    """Rows whose frames of digital silence differ step frame by frame, their states kept through their
    own silent frames (offline: each row's other frames gathered): each row as it streams alone."""
    torch.manual_seed(1)
    rows = torch.randn(3, 1, 4800) * 0.3
    rows[0, :, 800:2400] = 0.0
    rows[1, :, 3000:] = 0.0
    alone = torch.cat([enhancer.enhance(row[None]) for row in rows], 0)
    torch.testing.assert_close(_streamed(enhancer, rows, [480, 1600, 160]), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(enhancer.enhance(rows), alone, atol=1e-5, rtol=0)


def test_silent_frames_give_the_same_voice_activity_alone_or_batched():
    """The voice-activity logits of a row's silent frames came from zeros alone but from the network
    run over them (the padding of the gathered frames) beside a row with more sound: the training loss
    on them depended on the batch. Silent frames now give the head a zero state either way."""
    torch.manual_seed(0)
    model = Enhancer(replace(CONFIGS["enhance-16k"], vad_head=True)).eval()
    quiet, loud = torch.randn(2, 1, 4800) * 0.3
    quiet[:, 1600:3200] = 0.0
    with torch.no_grad():
        _, gains_alone, alone = model(quiet[None], return_gains=True)
        _, gains, batched = model(torch.stack([quiet, loud]), return_gains=True)
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(gains[:1], gains_alone, atol=1e-5, rtol=0)
