"""DiffSTFT: torch.stft parity, a naive numpy reference, gradients, inverse and streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_refuses_bad_audio
from torch.func import functional_call

from audiokit.errors import UsageError
from audiokit.frontends import DiffSTFT, concentration, kurtosis, renyi_entropy, stankovic


def naive_stft(x: np.ndarray, n_fft: int, lengths, centres, window: str) -> np.ndarray:
    """Direct evaluation of the model's formula with numpy loops (hann/blackman only)."""
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad), mode="reflect")
    out = np.zeros((n_fft // 2 + 1, len(centres)), dtype=complex)
    for k, c in enumerate(centres):
        base = math.floor(c)
        frac = c - base
        for m in range(n_fft):
            u = m - pad - frac
            a = 2 * math.pi * u / lengths[k]
            w = (
                0.5 + 0.5 * math.cos(a)
                if window == "hann"
                else 0.42 + 0.5 * math.cos(a) + 0.08 * math.cos(2 * a)
            )
            w *= abs(u) < lengths[k] / 2
            for f in range(n_fft // 2 + 1):
                out[f, k] += xp[base + m] * w * np.exp(-2j * math.pi * f * (m - frac) / n_fft)
    return out


@pytest.mark.parametrize(
    "n_fft,win_length,hop,window",
    [(512, 512, 128, "hann"), (512, 400, 160, "hann"), (256, 128, 64, "blackman"), (64, 48, 1, "hann")],
)
def test_integer_parameters_equal_torch_stft(n_fft, win_length, hop, window):
    """Seeded, and relative to the peak: float32 rounding alone reached 1.2e-5 on unseeded noise
    (|X| up to ~60), so an absolute 1e-5 failed about one run in 40."""
    torch.manual_seed(0)
    x = torch.randn(3, 2000)
    module = DiffSTFT(n_fft, win_length, hop, window)
    ref_window = getattr(torch, f"{window}_window")(win_length)
    ref = torch.stft(x, n_fft, hop, win_length, ref_window, center=True, return_complex=True)
    out = module(x)
    assert out.shape == ref.shape and out.dtype == torch.complex64
    assert (out - ref).abs().max() < 1e-6 * ref.abs().max()


def test_general_path_equals_torch_stft_at_integer_parameters():
    """A hop of 100 + 1e-9 takes the gathering path, which must agree with torch.stft."""
    x = torch.randn(2, 1500, dtype=torch.float64)
    module = DiffSTFT(256, 200, 100 + 1e-9, "hann").double()
    ref = torch.stft(x, 256, 100, 200, torch.hann_window(200, dtype=torch.float64), return_complex=True)
    assert (module(x) - ref).abs().max() < 1e-5


@pytest.mark.parametrize("window", ["hann", "blackman"])
def test_fractional_parameters_match_naive_reference(window):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300)
    module = DiffSTFT(32, 20, 13, window).double()
    with torch.no_grad():
        module.win_length.fill_(21.7)
        module.hop_length.fill_(13.3)
    out = module(torch.from_numpy(x)[None])[0].detach().numpy()
    centres = [k * 13.3 for k in range(1 + int(300 // 13.3))]
    ref = naive_stft(x, 32, [21.7] * len(centres), centres, window)
    np.testing.assert_allclose(out, ref, atol=1e-9)


def test_time_varying_matches_naive_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200)
    lengths = rng.uniform(8, 30, size=40)
    hops = rng.uniform(4, 11, size=40)
    module = DiffSTFT(32, 20, 8, "hann", time_varying=True, max_frames=40).double()
    with torch.no_grad():
        module.win_length.copy_(torch.from_numpy(lengths))
        module.hop_length.copy_(torch.from_numpy(hops))
    out = module(torch.from_numpy(x)[None])[0].detach().numpy()
    centres = np.concatenate([[0.0], np.cumsum(hops[:-1])])
    centres = centres[centres <= 200]
    np.testing.assert_allclose(out, naive_stft(x, 32, lengths, centres, "hann"), atol=1e-9)


def _gradcheck(module: DiffSTFT, x: torch.Tensor) -> bool:
    params = (
        module.win_length.detach().clone().requires_grad_(),
        module.hop_length.detach().clone().requires_grad_(),
    )

    def f(win_length, hop_length, audio):
        return functional_call(module, {"win_length": win_length, "hop_length": hop_length}, (audio,))

    return torch.autograd.gradcheck(
        f, (*params, x.clone().requires_grad_()), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True
    )


@pytest.mark.parametrize(
    "win_length,hop,window",
    [(100.3, 32.0, "hann"), (100.3, 31.4, "hann"), (90.7, 25.3, "gaussian"), (80.2, 30.0, "blackman")],
)
def test_gradcheck_float64(win_length, hop, window):
    torch.manual_seed(0)
    module = DiffSTFT(128, win_length, hop, window).double()
    assert _gradcheck(module, torch.randn(1, 301, dtype=torch.float64))


def test_gradcheck_time_varying():
    torch.manual_seed(0)
    module = DiffSTFT(64, 40.5, 15.2, "gaussian", time_varying=True, max_frames=24).double()
    with torch.no_grad():
        module.win_length.add_(torch.rand(24, dtype=torch.float64) * 10)
        module.hop_length.add_(torch.rand(24, dtype=torch.float64) * 3)
    assert _gradcheck(module, torch.randn(1, 250, dtype=torch.float64))


@pytest.mark.parametrize("hop", [64.0, 57.37])
@pytest.mark.parametrize("window", ["hann", "gaussian"])
def test_finite_differences_of_a_criterion(hop, window):
    """Central differences of a scalar TFR criterion agree with autograd for length and hop."""
    torch.manual_seed(0)
    t = torch.arange(4000, dtype=torch.float64) / 8000
    x = torch.cos(2 * math.pi * (300 * t + 2000 * t**2))[None] + 0.1 * torch.randn(
        1, 4000, dtype=torch.float64
    )
    module = DiffSTFT(512, 230.4, hop, window).double()
    loss = renyi_entropy(module(x))
    loss.backward()
    for param, step in ((module.win_length, 1e-3), (module.hop_length, 1e-5)):
        with torch.no_grad():
            param += step
            up = renyi_entropy(module(x))
            param -= 2 * step
            down = renyi_entropy(module(x))
            param += step
        numeric = (up - down) / (2 * step)
        assert abs(float(param.grad) - float(numeric)) <= 1e-4 * abs(float(numeric)) + 1e-7


def test_gradients_reach_parameters_on_fast_path():
    module = DiffSTFT(256, 200, 64)
    module(torch.randn(2, 1000)).abs().sum().backward()
    assert module.win_length.grad is not None and module.win_length.grad != 0
    assert module.hop_length.grad is not None and module.hop_length.grad != 0


@pytest.mark.parametrize(
    "win_length,hop,window,time_varying",
    [
        (512, 128, "hann", False),
        (300.6, 77.3, "hann", False),
        (250.0, 64.0, "gaussian", False),
        (200.5, 60.2, "blackman", True),
    ],
)
def test_inverse_reconstructs(win_length, hop, window, time_varying):
    torch.manual_seed(0)
    x = torch.randn(2, 4001)
    module = DiffSTFT(512, win_length, hop, window, time_varying=time_varying, max_frames=80)
    if time_varying:
        with torch.no_grad():
            module.win_length.add_(torch.rand(80) * 40)
            module.hop_length.add_(torch.rand(80) * 20)
    with torch.no_grad():
        y = module.inverse(module(x), x.shape[-1])
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-4


@pytest.mark.parametrize(
    "hop,time_varying,pad_mode", [(128, False, "reflect"), (77.3, False, "constant"), (50.5, True, "reflect")]
)
def test_streaming_equals_offline(hop, time_varying, pad_mode):
    torch.manual_seed(0)
    x = torch.randn(2, 5000)
    module = DiffSTFT(512, 400.2, hop, "hann", time_varying=time_varying, max_frames=120, pad_mode=pad_mode)
    if time_varying:
        with torch.no_grad():
            module.hop_length.add_(torch.rand(120) * 30)
    with torch.no_grad():
        offline = module(x)
        rng = np.random.default_rng(0)
        session, pieces, pos = module.stream(2), [], 0
        while pos < x.shape[-1]:
            n = int(rng.integers(1, 700))
            pieces.append(session.push(x[:, pos : pos + n]))
            pos += n
        pieces.append(session.flush())
    streamed = torch.cat(pieces, dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5
    assert session._buf.shape[-1] <= 2 * 512  # bounded memory


def test_streaming_emits_frames_as_soon_as_possible():
    module = DiffSTFT(256, 256, 64, "hann")
    session = module.stream(1)
    assert session.push(torch.randn(1, 128)).shape[-1] == 0
    assert session.push(torch.randn(1, 1)).shape[-1] == 1  # frame 0 reads padded samples 0..255


@pytest.mark.parametrize("window", ["hann", "gaussian"])
def test_frame_window_is_the_window_of_whole_sample_frames(window):
    """``frame_window`` on frames a caller keeps itself gives the forward pass's frames (one integer hop),
    carries the gradient to the window length, and a time-varying module, whose frames each have their
    own, refuses it in one line."""
    module = DiffSTFT(128, 93.3, 32, window, pad_mode="constant")
    x = torch.randn(2, 1000)
    frames = torch.nn.functional.pad(x, (64, 64)).unfold(-1, 128, 32)  # centred on 0, 32, ..., 992
    with torch.no_grad():
        spec = torch.fft.rfft(frames * module.frame_window(), dim=-1).transpose(1, 2)
        torch.testing.assert_close(spec, module(x)[..., : spec.shape[-1]], atol=1e-5, rtol=1e-5)
    module.frame_window().sum().backward()
    assert module.win_length.grad is not None and float(module.win_length.grad) != 0.0
    varying = DiffSTFT(128, 96, 32, time_varying=True, max_frames=8)
    with pytest.raises(UsageError, match="one window per frame"):
        varying.frame_window()


def test_push_after_flush_is_refused():
    """Flush pads the right edge into the buffer: a later push would read it as signal."""
    module = DiffSTFT(64, 40, 16)
    session = module.stream(1)
    session.push(torch.randn(1, 300))
    session.flush()
    assert session.flush().shape[-1] == 0
    with pytest.raises(UsageError, match="push after flush"):
        session.push(torch.randn(1, 300))


def test_inputs_must_be_float_batches():
    """Integer PCM, numpy arrays and wrong shapes are named (the stream took int16 as audio, forward
    failed inside torch.stft); float16 is computed in float32, as offline so streamed."""
    module = DiffSTFT(64, 40, 16)
    x = torch.randn(2, 300)
    call, push = (
        r"DiffSTFT: expected real float audio of shape \(batch",
        r"DiffSTFTStream.push: expected .* \(2, samples\)",
    )
    assert_refuses_bad_audio(module, x, call, push)
    half = x.half()
    with torch.no_grad():
        session = module.stream(2)
        streamed = torch.cat([session.push(half), session.flush()], -1)
        torch.testing.assert_close(module(half), module(half.float()))
        torch.testing.assert_close(streamed, module(half.float()))


@pytest.mark.parametrize("hop", [16.0, 16.5])
def test_an_empty_batch_is_a_usage_error(hop):
    """A batch of no rows is named (it failed inside torch.stft or MKL's FFT), on both paths."""
    with pytest.raises(
        UsageError, match=r"DiffSTFT: expected .* \(batch >= 1, samples\), got float32 of shape \(0, 300\)"
    ):
        DiffSTFT(64, 40, hop)(torch.zeros(0, 300))


def test_inverse_takes_only_complex_spectrograms_of_its_shape():
    """A magnitude was inverted as if its phase were 0; a wrong bin count failed inside torch."""
    module = DiffSTFT(64, 40, 16)
    spec = module(torch.randn(2, 300))
    for bad in (spec.abs(), spec[:, :10], spec[0]):
        with pytest.raises(UsageError, match=r"inverse: expected a complex \(batch, 33, frames\)"):
            module.inverse(bad, 300)


def test_usage_errors():
    with pytest.raises(UsageError, match="max_frames"):
        DiffSTFT(256, 200, 64, time_varying=True)
    with pytest.raises(UsageError, match="window"):
        DiffSTFT(256, 200, 64, window="kaiser")
    with pytest.raises(UsageError, match="reflect"):
        DiffSTFT(256, 200, 64)(torch.randn(1, 100))
    with pytest.raises(UsageError, match="more than max_frames"):
        DiffSTFT(64, 40, 10, time_varying=True, max_frames=5)(torch.randn(1, 1000))


def test_criteria_values():
    uniform = torch.ones(8, 4)
    assert torch.isclose(renyi_entropy(uniform), torch.tensor(5.0))  # log2(32)
    assert torch.isclose(concentration(uniform), torch.tensor(1 / 32))
    assert torch.isclose(stankovic(uniform), torch.tensor(32.0))
    peak = torch.zeros(8, 4)
    peak[3, 2] = 5.0
    assert torch.isclose(renyi_entropy(peak), torch.tensor(0.0), atol=1e-5)
    assert torch.isclose(concentration(peak), torch.tensor(1.0))
    assert torch.isclose(kurtosis(peak), torch.tensor(32.0))
    noise = torch.randn(20000, dtype=torch.complex64)
    assert abs(float(kurtosis(noise, dim=0)) - 2.0) < 0.1
    assert concentration(uniform, dim=-2).shape == (4,)


@pytest.mark.parametrize("time_varying", [False, True])
def test_frame_positions_stay_exact_on_long_inputs(time_varying):
    """Frame centres far into a long input keep their fractional part: float32 centres were off by
    up to half an ulp (1/8 sample at 2^21 samples): errors of 0.6 on unit-variance noise there."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(2**21).astype(np.float32)
    n_frames = 2110
    hops = np.float32(997.3) + rng.uniform(0, 2, n_frames).astype(np.float32) * time_varying
    module = DiffSTFT(32, 24.5, 997.3, "hann", time_varying=time_varying, max_frames=n_frames)
    with torch.no_grad():
        module.hop_length.copy_(torch.from_numpy(hops) if time_varying else torch.tensor(hops[0]))
        out = module(torch.from_numpy(x)[None])[0].numpy()
    hops = hops.astype(np.float64)
    centres = np.concatenate([[0.0], np.cumsum(hops[:-1])]) if time_varying else np.arange(n_frames) * hops[0]
    centres = centres[centres <= len(x)]
    assert out.shape[-1] == len(centres)
    ref = naive_stft(x.astype(np.float64), 32, [24.5] * 5, centres[-5:], "hann")
    np.testing.assert_allclose(out[:, -5:], ref, atol=2e-4 * np.abs(ref).max())


def test_odd_n_fft_frames_stop_before_the_padding_ends():
    """With an odd n_fft a frame centred on sample T reads one sample past the padding: the general
    path and the stream raised an IndexError (hop 12.5 on 100 samples; any integer hop streamed),
    and the fast path counted frames as torch.stft (c_k < T). All now keep the frames c_k < T."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(100)
    module = DiffSTFT(5, 4.5, 12.5, "hann", pad_mode="reflect").double()
    out = module(torch.from_numpy(x)[None])[0].detach().numpy()
    np.testing.assert_allclose(
        out, naive_stft(x, 5, [4.5] * 8, [12.5 * k for k in range(8)], "hann"), atol=1e-9
    )
    audio = torch.from_numpy(x)[None].float()
    for hop in (10.0, 12.5, 7.3):
        module = DiffSTFT(31, 20.0, hop, "hann")
        with torch.no_grad():
            offline = module(audio)
            session = module.stream(1)
            streamed = torch.cat(
                [session.push(audio[:, :60]), session.push(audio[:, 60:]), session.flush()], -1
            )
        assert offline.shape[-1] == math.ceil(100 / hop)  # torch.stft's 1 + (100 - 1) // 10 for hop 10
        torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def _descend(module: DiffSTFT, loss, steps: int = 40) -> None:
    optimiser = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        optimiser.zero_grad()
        loss(module).backward()
        optimiser.step()


@pytest.mark.parametrize("time_varying", [False, True])
def test_parameters_past_their_bounds_come_back(time_varying):
    """An optimiser step can carry the window length past n_fft or a hop below 1; the clamp then gave
    it no gradient, so it stayed there whatever the loss wanted. Now a loss that wants it back (the
    total power wants shorter windows; minus the power of a rising ramp wants later frames, i.e.
    longer hops) brings it back into range, and a gradient that pushes further out is still dropped."""
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 256) * torch.randn(1, 256)
    module = DiffSTFT(64, 40, 2.3, "hann", time_varying=time_varying, max_frames=300)
    with torch.no_grad():
        module.win_length.fill_(70.0)
    module.hop_length.requires_grad_(False)
    _descend(module, lambda m: m(ramp).abs().square().sum())
    used = module(ramp).shape[-1] if time_varying else 1  # per-frame parameters of frames that exist
    assert float(module.win_length.detach().reshape(-1)[:used].max()) < 64
    with torch.no_grad():
        module.win_length.fill_(70.0)
    module.zero_grad()
    (-module(ramp).abs().square().sum()).backward()  # wants longer windows: no way further out
    assert torch.all(module.win_length.grad == 0)

    with torch.no_grad():
        module.win_length.fill_(40.0)
        module.hop_length.fill_(0.5)
    module.win_length.requires_grad_(False)
    module.hop_length.requires_grad_(True)
    _descend(module, lambda m: -m(ramp).abs().square().sum())
    used = module(ramp).shape[-1] - 1 if time_varying else 1  # hops between frames that exist
    assert float(module.hop_length.detach().reshape(-1)[:used].min()) > 1


@pytest.mark.parametrize(
    "args,options,message",
    [
        ((256, 200, math.nan), {}, "finite hop_length >= 1, got 200, nan"),  # accepted: NaN spectra
        ((256, 200, math.inf), {}, "finite hop_length >= 1, got 200, inf"),  # accepted: one frame
        ((300.7, 200, 100), {}, "n_fft must be a whole number >= 4 samples, got 300.7"),  # became 300
        (("256", 200, 100), {}, "n_fft must be a whole number"),  # a TypeError
        ((512, "400", 160), {}, "finite hop_length >= 1, got '400', 160"),  # a TypeError
        ((512, 400, None), {}, "finite hop_length >= 1, got 400, None"),  # a TypeError
        ((256, 200, 100), {"time_varying": True, "max_frames": 10.5}, "a whole number >= 1, got 10.5"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(args, options, message):
    with pytest.raises(UsageError, match=message):
        DiffSTFT(*args, **options)
    assert DiffSTFT(np.int64(256), 200, 100, time_varying=True, max_frames=np.int64(3)).n_fft == 256


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_stream_of_no_rows_is_a_usage_error(batch_size):
    """``stream(batch_size)`` names a batch size that is not a whole number >= 1 (-1 raised a RuntimeError
    from torch.zeros; 0 made a session whose every push was refused)."""
    with pytest.raises(
        UsageError, match=f"DiffSTFT.stream: batch_size must be a whole number >= 1, got {batch_size}"
    ):
        DiffSTFT(64, 40, 16).stream(batch_size)


@pytest.mark.parametrize("order", [1.0, 0.0, -2.0, float("nan"), float("inf")])
def test_renyi_entropy_refuses_orders_it_has_no_value_for(order):
    """Order 1 raised a bare ValueError; order 0 or below, NaN and infinity returned NaN or nonsense."""
    with pytest.raises(UsageError, match=f"renyi_entropy: order {order}"):
        renyi_entropy(torch.ones(8, 4), order)


@pytest.mark.parametrize("p", [1.0, 0.5, float("nan"), float("inf")])
def test_stankovic_refuses_p_of_one_or_below(p):
    with pytest.raises(UsageError, match=f"stankovic: p {p}"):
        stankovic(torch.ones(8, 4), p)
