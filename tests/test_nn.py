"""audiokit.nn: exact lengths, causality (offline vs prefix), explicit-state streaming, Snake, weight norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from audiokit.nn import (
    CausalISTFTHead,
    CausalSTFT,
    ISTFTDecoder,
    SEANetDecoder,
    SEANetEncoder,
    Snake,
    STFTEncoder,
    StreamableConv1d,
    StreamableConvTranspose1d,
    remove_weight_norm,
)

SMALL = {"n_filters": 4, "ratios": (4, 2), "dimension": 6}  # hop 8


def small_stack(causal: bool, activation: str = "elu", lstm_layers: int = 0):
    torch.manual_seed(0)
    kw = dict(SMALL, causal=causal, activation=activation, lstm_layers=lstm_layers)
    return SEANetEncoder(**kw).eval(), SEANetDecoder(**kw).eval()


def small_stft_encoder(**options) -> STFTEncoder:
    """A tiny STFT encoder: 32-sample frames of 6 dimensions from a 48-point STFT at hop 16."""
    return STFTEncoder(
        dimension=6, hop_length=32, n_fft=48, stft_hop=16, hidden_dim=8, intermediate_dim=16, **options
    )


def small_istft(causal: bool = True) -> ISTFTDecoder:
    torch.manual_seed(0)
    return ISTFTDecoder(
        dimension=6,
        hop_length=8,
        n_fft=16,
        istft_hop=4,
        hidden_dim=8,
        intermediate_dim=16,
        n_blocks=2,
        causal=causal,
    ).eval()


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"), [(7, 1, 1), (3, 1, 4), (8, 4, 1), (4, 4, 1), (5, 2, 2)]
)
def test_conv_lengths(causal, kernel, stride, dilation):
    conv = StreamableConv1d(2, 3, kernel, stride, dilation, causal=causal)
    convtr = StreamableConvTranspose1d(3, 2, max(kernel, stride), stride, causal=causal)
    for length in range(1, 3 * stride + 2):
        y = conv(torch.randn(1, 2, length))
        assert y.shape[-1] == math.ceil(length / stride) == conv.output_length(length)
        assert convtr(y).shape[-1] == y.shape[-1] * stride == convtr.output_length(y.shape[-1])


def naive_conv(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, dilation: int, left: int, right: int
):
    """Direct loop: zero-pad, then y[o, j] = b[o] + sum_{i, k} w[o, i, k] x[i, j * stride + k * dilation]."""
    xp = np.pad(x, ((0, 0), (left, right)))
    span = (w.shape[-1] - 1) * dilation + 1
    frames = (xp.shape[-1] - span) // stride + 1
    y = np.zeros((w.shape[0], frames))
    for j in range(frames):
        for k in range(w.shape[-1]):
            y[:, j] += w[:, :, k] @ xp[:, j * stride + k * dilation]
    return y + b[:, None]


@pytest.mark.parametrize("causal", [True, False])
def test_conv_matches_naive_loop(causal):
    torch.manual_seed(1)
    conv = StreamableConv1d(2, 3, 5, stride=2, dilation=2, causal=causal)
    x = torch.randn(1, 2, 23)
    w = conv.conv.weight.detach().double().numpy()
    b = conv.conv.bias.detach().double().numpy()
    total = 9 - 2
    left = total if causal else total - total // 2
    right = total - left + (-23) % 2
    ref = naive_conv(x[0].double().numpy(), w, b, 2, 2, left, right)
    np.testing.assert_allclose(conv(x)[0].detach().numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("causal", "activation"), [(True, "snake"), (False, "elu")])
def test_seanet_exact_length_every_length(causal, activation):
    encoder, decoder = small_stack(causal, activation)
    hop = encoder.hop_length
    for length in range(1, 2 * hop + 2):
        with torch.no_grad():
            z = encoder(torch.randn(2, 1, length))
            y = decoder(z)
        assert z.shape == (2, 6, math.ceil(length / hop))
        assert y.shape == (2, 1, z.shape[-1] * hop)


def test_seanet_default_ratios_lengths():
    torch.manual_seed(0)
    encoder = SEANetEncoder(dimension=16, n_filters=4).eval()
    decoder = SEANetDecoder(dimension=16, n_filters=4).eval()
    istft = ISTFTDecoder(dimension=16, hidden_dim=16, intermediate_dim=32, n_blocks=1).eval()
    assert encoder.hop_length == decoder.hop_length == istft.hop_length == 320
    for length in (1, 319, 320, 321, 961):
        with torch.no_grad():
            z = encoder(torch.randn(1, 1, length))
            assert z.shape[-1] == math.ceil(length / 320)
            assert decoder(z).shape[-1] == istft(z).shape[-1] == z.shape[-1] * 320


# ---------------------------------------------------------------- causality: offline vs prefix


def assert_prefix_equal(full: torch.Tensor, part: torch.Tensor, count: int) -> None:
    """Causality: the first ``count`` steps computed without the future equal the offline ones."""
    torch.testing.assert_close(part[..., :count], full[..., :count], rtol=0, atol=1e-6)


@pytest.mark.parametrize("activation", ["elu", "snake"])
@pytest.mark.parametrize("lstm_layers", [0, 2])
def test_causal_encoder_ignores_future(activation, lstm_layers):
    encoder, _ = small_stack(True, activation, lstm_layers)
    hop = encoder.hop_length
    x = torch.randn(2, 1, 12 * hop + 3)
    with torch.no_grad():
        full = encoder(x)
        for n in (1, hop - 1, hop, hop + 1, 5 * hop, 7 * hop + 5, 12 * hop):
            assert_prefix_equal(full, encoder(x[..., :n]), n // hop)


@pytest.mark.parametrize("lstm_layers", [0, 2])
def test_causal_decoders_ignore_future(lstm_layers):
    _, decoder = small_stack(True, "snake", lstm_layers)
    for model in (decoder, small_istft()):
        z = torch.randn(2, 6, 12)
        with torch.no_grad():
            full = model(z)
            for k in (1, 2, 7, 11):
                assert_prefix_equal(full, model(z[..., :k]), k * model.hop_length)


def test_non_causal_encoder_does_read_future():
    """The prefix test must be able to fail: a non-causal encoder's last frames change with future input."""
    encoder, _ = small_stack(False)
    x = torch.randn(1, 1, 96)
    with torch.no_grad():
        assert not torch.allclose(encoder(x[..., :48]), encoder(x)[..., :6], atol=1e-4)


def input_support(model, x: torch.Tensor, index: int) -> tuple[int, int]:
    """First and last input step whose gradient reaches output step ``index`` (all channels)."""
    x = x.clone().requires_grad_(True)
    model(x)[..., index].sum().backward()
    hits = torch.nonzero(x.grad.abs().sum(dim=(0, 1)) > 0).flatten()
    return int(hits[0]), int(hits[-1])


@pytest.mark.parametrize("causal", [True, False])
def test_encoder_receptive_field_and_lookahead(causal):
    encoder, _ = small_stack(causal)
    hop = encoder.hop_length
    x = torch.randn(1, 1, 160 * hop)
    j = 100
    first, last = input_support(encoder, x, j)
    assert last == (j + 1) * hop - 1 + encoder.lookahead
    assert last - first + 1 == encoder.receptive_field
    assert (encoder.lookahead == 0) == causal


@pytest.mark.parametrize("causal", [True, False])
def test_decoder_lookahead(causal):
    _, decoder = small_stack(causal)
    models = [decoder, small_istft(causal)]
    for model in models:
        hop = model.hop_length
        z = torch.randn(1, 6, 64)
        for t in (20 * hop + 1, 20 * hop + 3, 21 * hop - 1):
            _, last = input_support(model, z, t)
            assert last == (t + model.lookahead) // hop
        assert (model.lookahead == 0) == causal


# ---------------------------------------------------------------- streaming with explicit state


def stream_conv(conv: StreamableConv1d, x: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Causal conv streamed with a state of ``history_length`` past samples (zeros at the start)."""
    module = conv.conv
    buffer = x.new_zeros(*x.shape[:-1], conv.history_length)
    outs, start = [], 0
    for size in chunks:
        buffer = torch.cat([buffer, x[..., start : start + size]], -1)
        start += size
        n = (buffer.shape[-1] - conv.history_length) // conv.stride
        if n:
            used = buffer[..., : conv.history_length + n * conv.stride]
            outs.append(
                F.conv1d(used, module.weight, module.bias, conv.stride, 0, conv.dilation, module.groups)
            )
            buffer = buffer[..., n * conv.stride :]
    return torch.cat(outs, -1)


def stream_overlap_add(step, frames: torch.Tensor, chunks: list[int], hop: int, overlap: int, bias=None):
    """Run ``step`` (bias-free, frames -> ``n * hop + overlap`` samples) chunk by chunk, carrying the tail."""
    tail, outs, start = None, [], 0
    for size in chunks:
        y = step(frames[..., start : start + size])
        start += size
        if tail is not None:
            y = torch.cat([y[..., :overlap] + tail, y[..., overlap:]], -1)
        outs.append(y[..., : size * hop])
        tail = y[..., size * hop :]
    out = torch.cat(outs, -1)
    return out if bias is None else out + bias[:, None]


CHUNKS = [1, 5, 2, 9, 3, 4]


@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(7, 1, 1), (3, 1, 9), (8, 4, 1), (5, 2, 3)])
def test_causal_conv_streams_with_history_state(kernel, stride, dilation):
    torch.manual_seed(0)
    conv = StreamableConv1d(3, 2, kernel, stride, dilation, causal=True)
    x = torch.randn(2, 3, sum(CHUNKS) * stride)
    with torch.no_grad():
        torch.testing.assert_close(
            stream_conv(conv, x, [c * stride for c in CHUNKS]), conv(x), rtol=0, atol=1e-6
        )
        uneven = stream_conv(conv, x, [c * stride + 1 for c in CHUNKS[:-1]])
        assert_prefix_equal(conv(x), uneven, uneven.shape[-1])


@pytest.mark.parametrize(("kernel", "stride"), [(8, 4), (4, 4), (10, 5), (3, 1)])
def test_causal_conv_transpose_streams_with_overlap_state(kernel, stride):
    torch.manual_seed(0)
    convtr = StreamableConvTranspose1d(3, 2, kernel, stride, causal=True)
    z = torch.randn(2, 3, sum(CHUNKS))
    module = convtr.convtr
    with torch.no_grad():
        streamed = stream_overlap_add(
            lambda c: F.conv_transpose1d(c, module.weight, None, stride),
            z,
            CHUNKS,
            stride,
            convtr.overlap_length,
            module.bias,
        )
        torch.testing.assert_close(streamed, convtr(z), rtol=0, atol=1e-5)


def test_istft_head_streams_with_overlap_add_tail():
    torch.manual_seed(0)
    head = CausalISTFTHead(dim=5, channels=2, n_fft=32, hop_length=8, frames_per_step=2)
    x = torch.randn(3, 5, sum(CHUNKS))
    with torch.no_grad():
        streamed = stream_overlap_add(
            lambda c: head.synthesize(head.spectrogram(c.transpose(1, 2))), x, CHUNKS, 16, head.overlap_length
        )
        torch.testing.assert_close(streamed, head(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("n_fft", "hop", "window"), [(32, 8, "hann"), (64, 32, "hann"), (48, 16, "sqrt_hann")]
)
def test_istft_head_inverts_causal_stft(n_fft, hop, window):
    """A numpy STFT in the causal layout (frame m = x[m hop : m hop + n_fft]) is inverted exactly."""
    rng = np.random.default_rng(0)
    frames = 20
    x = rng.standard_normal(frames * hop + n_fft)
    w = {"hann": np.hanning(n_fft + 1)[:-1], "sqrt_hann": np.sqrt(np.hanning(n_fft + 1)[:-1])}[window]
    spec = np.stack([np.fft.rfft(x[m * hop : m * hop + n_fft] * w) for m in range(frames)], -1)
    head = CausalISTFTHead(dim=1, n_fft=n_fft, hop_length=hop, window=window)
    y = head.synthesize(torch.from_numpy(spec.T).to(torch.complex64)[None, :, None])[0, 0].numpy()
    settled = slice(n_fft - hop, frames * hop)
    np.testing.assert_allclose(y[settled], x[settled], atol=1e-5)


# ---------------------------------------------------------------- Snake, weight norm


def test_snake_matches_formula():
    torch.manual_seed(0)
    snake = Snake(3)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([[0.5], [1.0], [-2.0]]))
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    a = snake.alpha.detach().double()
    torch.testing.assert_close(snake.double()(x), x + torch.sin(a * x) ** 2 / a)


@pytest.mark.parametrize("alpha", [0.0, 1e-30, 1e-12, -1e-8, 1e-4])
def test_snake_is_finite_near_zero_alpha(alpha):
    snake = Snake(2, alpha_init=alpha)
    x = torch.linspace(-50, 50, 201).reshape(1, 1, -1).repeat(1, 2, 1).requires_grad_(True)
    y = snake(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(snake.alpha.grad).all()
    # sin(a x)^2 / a -> a x^2 as a -> 0; d/da at a = 0 is x^2
    torch.testing.assert_close(y, x + alpha * x.square(), rtol=1e-5, atol=1e-6)
    snake.alpha.grad = None
    snake(x).sum().backward()
    expected = x.detach().square().sum(dim=(0, 2))[:, None]
    torch.testing.assert_close(snake.alpha.grad, expected, rtol=1e-3, atol=1e-3)


def test_weight_norm_present_and_removable():
    encoder, decoder = small_stack(True)
    convs = [
        m
        for m in [*encoder.modules(), *decoder.modules()]
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))
    ]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    x = torch.randn(1, 1, 77)
    with torch.no_grad():
        before = decoder(encoder(x))
        remove_weight_norm(encoder)
        remove_weight_norm(decoder)
        after = decoder(encoder(x))
    assert not any(parametrize.is_parametrized(m) for m in convs)
    assert "conv.weight" in dict(encoder.model[0].named_parameters())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_bad_geometry_is_rejected():
    with pytest.raises(ValueError, match="shorter than stride"):
        StreamableConv1d(1, 1, 2, stride=4)
    with pytest.raises(ValueError, match="multiple"):
        CausalISTFTHead(4, n_fft=30, hop_length=8)
    with pytest.raises(ValueError, match="unknown activation"):
        SEANetEncoder(activation="swish")


@pytest.mark.parametrize("length", [1, 159, 160, 161, 1000])
def test_causal_stft_matches_numpy_loop(length):
    """Frame m windows samples [(m + 1) hop - n_fft, (m + 1) hop), zeros outside; X |X|^(c - 1)."""
    n_fft, hop, c = 48, 16, 0.3
    stft = CausalSTFT(channels=2, n_fft=n_fft, hop_length=hop, compression=c)
    x = torch.randn(1, 2, length, dtype=torch.float64)
    got = stft(x.float()).double().numpy()[0]
    signal = x.numpy()[0]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = math.ceil(length / hop)
    assert got.shape == (frames, 2 * 2 * (n_fft // 2 + 1))
    for m in range(frames):
        for ch in range(2):
            segment = np.zeros(n_fft)
            for i in range(n_fft):
                t = (m + 1) * hop - n_fft + i
                if 0 <= t < length:
                    segment[i] = signal[ch, t]
            spec = np.fft.rfft(segment * window)
            spec = spec * (np.abs(spec) ** 2 + stft.eps) ** ((c - 1) / 2)
            expected = np.concatenate([spec.real, spec.imag])
            np.testing.assert_allclose(
                got[m, ch * expected.size : (ch + 1) * expected.size], expected, atol=1e-5
            )


def test_stft_encoder_lengths_and_causality():
    torch.manual_seed(0)
    encoder = small_stft_encoder(n_blocks=2).eval()
    assert encoder.lookahead == 0
    for length in (1, 31, 32, 33, 100, 257):
        assert encoder(torch.randn(2, 1, length)).shape == (2, 6, math.ceil(length / 32))
    x = torch.randn(1, 1, 320)
    full = encoder(x)
    changed = x.clone()
    changed[..., 160:] = torch.randn(1, 1, 160)  # frames 0..4 end at sample 160
    assert torch.equal(encoder(changed)[..., :5], full[..., :5])
    assert not torch.allclose(encoder(changed)[..., 5:], full[..., 5:])
    non_causal = small_stft_encoder(n_blocks=2, causal=False)
    assert non_causal.lookahead > 0


# ---------------------------------------------------------------- empty chunks


def _empty_chunk_cases():
    from audiokit.nn.lstm import StreamableLSTM
    from audiokit.nn.noise_floor import NoiseFloor
    from audiokit.nn.pitch import PitchSpectrum
    from audiokit.nn.spectral import CausalInverseSpectrum, CausalSpectrum
    from audiokit.nn.vocos import ConvNeXtBlock

    enc, dec = small_stack(True, lstm_layers=1)
    # (module, input (B, C, T) or for NoiseFloor (B, T, bands), time axis, samples per step unit)
    return {
        "conv": (StreamableConv1d(3, 4, 5, 2, causal=True).eval(), torch.randn(2, 3, 12), -1, 2),
        "grouped_conv": (
            StreamableConv1d(4, 6, 3, groups=2, causal=True).eval(),
            torch.randn(2, 4, 6),
            -1,
            1,
        ),
        "conv_transpose": (
            StreamableConvTranspose1d(3, 2, 4, 2, causal=True).eval(),
            torch.randn(2, 3, 6),
            -1,
            1,
        ),
        "lstm": (StreamableLSTM(3, 1).eval(), torch.randn(2, 3, 6), -1, 1),
        "convnext": (ConvNeXtBlock(8, 16).eval(), torch.randn(2, 8, 6), -1, 1),
        "seanet_encoder": (enc, torch.randn(2, 1, 48), -1, 8),
        "seanet_decoder": (dec, torch.randn(2, 6, 6), -1, 1),
        "stft_encoder": (
            small_stft_encoder(n_blocks=1).eval(),
            torch.randn(2, 1, 192),
            -1,
            32,
        ),
        "istft_decoder": (small_istft(), torch.randn(2, 6, 6), -1, 1),
        "causal_spectrum": (CausalSpectrum(32, 16), torch.randn(2, 1, 96), -1, 16),
        "inverse_spectrum": (
            CausalInverseSpectrum(32, 16),
            torch.randn(2, 1, 17, 6, dtype=torch.complex64),
            -1,
            1,
        ),
        "pitch": (PitchSpectrum(32, 16, 8, 32), torch.randn(2, 1, 96), -1, 16),
        "noise_floor": (NoiseFloor(4, (1.0, 3.0)), torch.rand(2, 6, 4), 1, 1),
    }


@pytest.mark.parametrize(
    "name",
    [
        "conv",
        "grouped_conv",
        "conv_transpose",
        "lstm",
        "convnext",
        "seanet_encoder",
        "seanet_decoder",
        "stft_encoder",
        "istft_decoder",
        "causal_spectrum",
        "inverse_spectrum",
        "pitch",
        "noise_floor",
    ],
)
def test_blocks_step_empty_chunks(name):
    """A step of 0 samples (a stream with nothing new, or a final flush on a hop boundary) gives 0 frames
    and leaves the state as it was: streaming with empty chunks in between equals streaming without."""
    from audiokit.nn.state import flatten_state

    torch.manual_seed(0)
    module, x, axis, unit = _empty_chunk_cases()[name]

    def run(sizes):
        state = module.init_state(x.shape[0], x.device, x.real.dtype)
        outs, start = [], 0
        for i, size in enumerate(sizes):
            out = module.step(x.narrow(axis, start, size), state, final=i == len(sizes) - 1)
            outs.append(out if isinstance(out, tuple) else (out,))
            start += size
        return outs, flatten_state(state)

    with torch.inference_mode():
        plain, plain_state = run([unit, 2 * unit, x.shape[axis] - 3 * unit])
        empties, empty_state = run([0, unit, 0, 2 * unit, 0, x.shape[axis] - 3 * unit, 0])
    for parts, ref_parts in zip(zip(*empties, strict=True), zip(*plain, strict=True), strict=True):
        out_axis = 1 if name == "noise_floor" else -1
        assert parts[0].shape[out_axis] == 0 and parts[0].dtype == ref_parts[0].dtype
        assert parts[0].shape[:out_axis] == ref_parts[0].shape[:out_axis]
        assert torch.equal(torch.cat(parts, out_axis), torch.cat(ref_parts, out_axis))
    assert plain_state.keys() == empty_state.keys()
    assert all(torch.equal(plain_state[key], empty_state[key]) for key in plain_state)
