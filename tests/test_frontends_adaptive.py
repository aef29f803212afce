"""AdaptiveFilterbank, FIR banks, PCEN and the front-end factory, against independent references."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from conftest import assert_refuses_bad_audio

from audiokit.errors import UsageError
from audiokit.frontends import PCEN, AdaptiveFilterbank, FIRFilterbank, build_frontend
from audiokit.frontends.filterbank import target_responses
from audiokit.nn.state import zero_rows

SR = 16000


def response_db(taps: torch.Tensor, n_fft: int = 8192) -> np.ndarray:
    return np.abs(np.fft.fft(taps.detach().numpy(), n=n_fft, axis=-1))[..., : n_fft // 2 + 1]


@pytest.mark.parametrize("init", ["mel", "erb", "linear"])
def test_designed_banks_follow_their_target_responses(init):
    bank = FIRFilterbank(SR, 24, 641, init)
    got = response_db(bank.taps(), 4096)
    target = target_responses(init, SR, 24, 0.0, SR / 2).numpy()
    freqs = np.linspace(0, SR / 2, 2049)
    for b in range(4, 24):  # bands wide enough for a 641-tap filter
        centre_got = (got[b] ** 2 * freqs).sum() / (got[b] ** 2).sum()
        centre_want = (target[b] ** 2 * freqs).sum() / (target[b] ** 2).sum()
        assert abs(centre_got - centre_want) < 0.06 * centre_want + 20
    assert got.max(axis=1) == pytest.approx(1.0, abs=1e-4)  # unit peak gain
    spectrum = np.abs(np.fft.fft(bank.taps().detach().numpy(), n=4096, axis=-1))
    negative = spectrum[:, 2048 + 256 : 4096 - 128]  # -7000 .. -500 Hz
    assert negative.max() < 0.02  # analytic: positive frequencies only


@pytest.mark.parametrize("init", ["gabor", "sinc"])
def test_parametric_banks_have_the_requested_centre_and_bandwidth(init):
    bank = FIRFilterbank(SR, 16, 801, init)
    with torch.no_grad():
        bank.centre_hz.copy_(torch.linspace(500, 7000, 16))
        bank.bandwidth_hz.fill_(400.0)
    got = response_db(bank.taps())
    freqs = np.linspace(0, SR / 2, got.shape[1])
    for b in range(16):
        passband = freqs[got[b] >= 0.5]
        assert abs((passband.max() + passband.min()) / 2 - float(bank.centre_hz[b].detach())) < 10
        assert abs((passband.max() - passband.min()) - 400) < 40  # half-amplitude width


def naive_energies(x: np.ndarray, taps: np.ndarray, module: AdaptiveFilterbank) -> np.ndarray:
    """numpy convolution, |y|^2 sampled every energy_stride samples, weighted mean over 2 * hop."""
    hop, stride, pool = module.hop_length, module.energy_stride, module.pool.numpy()
    n_frames = len(x) // hop
    out = np.zeros((taps.shape[0], n_frames))
    for b in range(taps.shape[0]):
        power = np.abs(np.convolve(x, taps[b])[: len(x)]) ** 2  # causal, zero history
        for j in range(n_frames):
            end = (j + 1) * hop - 1
            times = end - stride * np.arange(len(pool))[::-1]
            values = np.where(times >= 0, power[np.clip(times, 0, None)], 0.0)
            out[b, j] = (pool * values).sum()
    return out


def test_energies_match_numpy_convolution():
    """Both ways of computing them: products (inference, steps) and convolutions (autograd recording)."""
    torch.manual_seed(0)
    module = AdaptiveFilterbank(SR, n_bands=8, hop_length=80, filter_length=161, banks=("mel", "gabor"))
    x = torch.randn(1, 1600)
    padded = torch.nn.functional.pad(x, (module.history, 0))
    with torch.no_grad():
        got = module.energies(padded)[0].numpy()
    trained = module.energies(padded)[0].detach().numpy()
    for k, bank in enumerate(module.banks):
        ref = naive_energies(x[0].numpy().astype(np.float64), bank.taps().detach().numpy(), module)
        np.testing.assert_allclose(got[k], ref, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(trained[k], ref, rtol=1e-3, atol=1e-6)


def test_pcen_matches_a_naive_recursion():
    torch.manual_seed(0)
    pcen = PCEN(5, s=0.2)
    energy = torch.rand(2, 5, 150).double() + 0.01
    pcen = pcen.double()
    got, _ = pcen(energy)
    s, alpha, delta, r = 0.2, 0.96, 2.0, 0.5
    e = energy.numpy()
    m = e[..., 0].copy()
    ref = np.zeros_like(e)
    for t in range(e.shape[-1]):
        m = (1 - s) * m + s * e[..., t]
        ref[..., t] = (e[..., t] / (1e-6 + m) ** alpha + delta) ** r - delta**r
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("compression", ["log", "pcen"])
def test_streaming_equals_offline_and_is_causal(compression):
    torch.manual_seed(0)
    module = AdaptiveFilterbank(SR, n_bands=16, compression=compression, segment_frames=7).eval()
    x = 0.1 * torch.randn(2, 8000)
    with torch.no_grad():
        offline = module(x)
        session, pieces, pos = module.stream(2), [], 0
        rng = np.random.default_rng(0)
        while pos < x.shape[-1]:
            n = int(rng.integers(1, 900))
            pieces.append(session.push(x[:, pos : pos + n]))
            pos += n
        pieces.append(session.flush())
        changed = x.clone()
        changed[:, 4000:] = torch.randn(2, 4000)
        early = module(changed)
    assert torch.cat(pieces, -1).shape == offline.shape == (2, 16, 50)
    assert (torch.cat(pieces, -1) - offline).abs().max() < 1e-4
    assert torch.equal(early[..., :25], offline[..., :25])  # frames ending before sample 4000


@pytest.mark.parametrize("compression", ["log", "pcen"])
def test_steps_equal_forward_and_a_reset_row_starts_over(compression):
    """``init_state`` / ``step`` on whole hops (any number, zero included) give ``forward``'s frames,
    across segments whose hard decisions change; ``zero_rows`` on the state restarts a row (its
    history, segment sums, frame count and PCEN smoother) while the other goes on; ``mixing="input"``
    does not step."""
    torch.manual_seed(0)
    module = AdaptiveFilterbank(
        SR, n_bands=16, compression=compression, segment_frames=3, banks=("mel", "linear", "gabor")
    ).eval()
    with torch.no_grad():  # an analyser whose decisions change from segment to segment
        for p in module.analyser.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    hop = module.hop_length
    x, y = 0.1 * torch.randn(2, 30 * hop), 0.1 * torch.randn(2, 20 * hop)
    assert len(set(module.mixing_weights(x)[0].argmax(-1).tolist())) > 1
    rng = np.random.default_rng(0)
    with torch.no_grad():
        state, frames, pos = module.init_state(2), [], 0
        while pos < x.shape[-1]:
            n = int(rng.integers(0, 5)) * hop
            frames.append(module.step(x[:, pos : pos + n], state))
            pos += n
        torch.testing.assert_close(torch.cat(frames, -1), module(x), atol=1e-5, rtol=1e-5)
        zero_rows(state, torch.tensor([1]))
        after = torch.cat([module.step(y[:, : 7 * hop], state), module.step(y[:, 7 * hop :], state)], -1)
        torch.testing.assert_close(after[1:], module(y[1:]), atol=1e-5, rtol=1e-5)
        whole = module(torch.cat([x[:1], y[:1]], -1))[..., 30:]
        torch.testing.assert_close(after[:1], whole, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of the hop"):
        module.step(x[:, :100], module.init_state(2))
    with pytest.raises(UsageError, match="mixing='input' looks at the whole input"):
        AdaptiveFilterbank(SR, n_bands=8, mixing="input").step(x, state)


def test_hard_selection_at_inference_uses_one_bank():
    torch.manual_seed(0)
    module = AdaptiveFilterbank(SR, n_bands=16, mixing="input", banks=("mel", "linear", "gabor")).eval()
    x = 0.1 * torch.randn(2, 4000)
    with torch.no_grad():
        weights = module.mixing_weights(x)
        out = module(x)
        energies = module.energies(torch.nn.functional.pad(x, (module.history, 0)))
    assert torch.all(weights.sum(-1) == 1) and torch.all((weights == 0) | (weights == 1))
    for b in range(2):
        k = int(weights[b, 0].argmax())
        assert torch.allclose(out[b], torch.log(energies[b, k] + 1e-6))
    module.train()
    soft = module.mixing_weights(x)
    assert torch.allclose(soft.sum(-1), torch.ones(2, soft.shape[1])) and soft.min() > 0


def test_segment_decisions_use_the_previous_segment():
    torch.manual_seed(0)
    module = AdaptiveFilterbank(SR, n_bands=8, segment_frames=5, banks=("mel", "linear")).train()
    x = 0.1 * torch.randn(1, 16000)
    weights = module.mixing_weights(x)[0]
    assert torch.allclose(weights[:5], torch.softmax(module.prior, -1).expand(5, 2))
    assert torch.allclose(weights[5], weights[9])  # constant within a segment
    logits = module.logits(torch.nn.functional.pad(x, (module.history, 0)))[0]
    assert torch.allclose(weights[5], torch.softmax(logits[:5].mean(0), -1))


def test_gradients_reach_banks_and_analyser():
    module = AdaptiveFilterbank(
        SR, n_bands=8, banks=("mel", "gabor", "sinc"), compression="pcen", segment_frames=5
    )
    module.train()
    module(0.1 * torch.randn(2, 3200)).mean().backward()
    for name in (
        "banks.0.real",
        "banks.1.centre_hz",
        "banks.2.bandwidth_hz",
        "analyser.0.weight",
        "pcen.log_r",
    ):
        grad = dict(module.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def graph_size(tensor: torch.Tensor) -> int:
    """Autograd nodes ``tensor`` depends on."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(child for child, _ in node.next_functions)
    return len(seen)


def test_streaming_with_autograd_keeps_a_bounded_graph():
    """The PCEN and segment states carried from push to push are detached: the graph (memory) of a
    push does not grow with the stream (it grew with every push, as did the memory it holds)."""
    module = AdaptiveFilterbank(SR, n_bands=8, banks=("mel", "gabor"), compression="pcen", segment_frames=3)
    session = module.stream(1)
    sizes = [graph_size(session.push(0.1 * torch.randn(1, 800))) for _ in range(12)]
    assert max(sizes[6:]) == max(sizes[3:6])  # a push of 5 frames: the same 3-push segment pattern
    session.push(0.1 * torch.randn(1, 800)).sum().backward()
    assert module.pcen.log_r.grad is not None and module.analyser[0].weight.grad is not None


@pytest.mark.parametrize("length", [0, 1, 159])
def test_inputs_shorter_than_a_hop_give_no_frames(length):
    """``(B, T) -> (B, n_bands, T // hop)`` holds below one hop too, as the stream gives it."""
    module = AdaptiveFilterbank(SR, n_bands=8, banks=("mel", "gabor")).eval()
    x = 0.1 * torch.randn(2, length)
    assert module(x).shape == (2, 8, 0)
    assert module.mixing_weights(x).shape == (2, 0, 2)
    assert module.stream(2).push(x).shape == (2, 8, 0)


def test_inputs_must_be_float_batches_and_take_the_modules_dtype():
    module = AdaptiveFilterbank(SR, n_bands=8, banks=("mel", "gabor")).eval()
    x = 0.1 * torch.randn(2, 800)
    call, push = (
        r"AdaptiveFilterbank: expected real float audio",
        r"push: expected real float audio of shape \(2, samples\)",
    )
    assert_refuses_bad_audio(module, x, call, push)
    with torch.no_grad():
        assert torch.equal(module(x.double()), module(x))
        assert torch.equal(module.stream(2).push(x.double()), module(x))


def test_usage_errors():
    with pytest.raises(UsageError, match="banks"):
        AdaptiveFilterbank(SR, banks=("mel", "bark"))
    with pytest.raises(UsageError, match="segment"):
        AdaptiveFilterbank(SR, mixing="input").stream(1)
    with pytest.raises(UsageError, match="unknown name"):
        build_frontend("cqt", SR)


def test_factory_adaptive_takes_its_options_and_refuses_stft_ones():
    """The factory's adaptive front end is the AdaptiveFilterbank of the options given (hop_length,
    n_bands and its own); STFT options it cannot honour, and unknown ones, are refused, not dropped."""
    x = 0.1 * torch.randn(2, 4000)
    options = {"banks": ("mel", "gabor"), "filter_length": 161, "mixing": "input"}
    torch.manual_seed(3)
    module = build_frontend("adaptive", SR, hop_length=80, n_bands=24, **options)
    torch.manual_seed(3)
    reference = AdaptiveFilterbank(SR, n_bands=24, hop_length=80, **options)
    assert (module.hop_length, module.n_bands, module.filter_length) == (80, 24, 161)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=0, atol=0)
    for stft in ({"n_fft": 1024}, {"win_length": 400}, {"window": "blackman"}):
        with pytest.raises(UsageError, match=f"'adaptive': {next(iter(stft))} set an STFT.*filter_length"):
            build_frontend("adaptive", SR, **stft)
    with pytest.raises(UsageError, match="'adaptive': unexpected options diffstft_mel; it takes .*banks"):
        build_frontend("adaptive", SR, diffstft_mel=True)
    with pytest.raises(UsageError, match="learn_hop is for 'diffstft'"):
        build_frontend("adaptive", SR, learn_hop=True)


def test_factory_mel_matches_librosa():
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    module = build_frontend("mel", SR)
    got = module(torch.from_numpy(x)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(
        y=x,
        sr=SR,
        n_fft=512,
        hop_length=160,
        win_length=400,
        n_mels=64,
        power=2.0,
        center=True,
        pad_mode="reflect",
    )
    np.testing.assert_allclose(got, np.log(ref + 1e-6), atol=2e-3)


@pytest.mark.parametrize("name,features", [("mel", 64), ("stft", 257), ("diffstft", 257), ("adaptive", 64)])
def test_factory_shapes_and_trainability(name, features):
    module = build_frontend(name, SR)
    out = module(0.1 * torch.randn(2, 16000))
    assert out.shape[:2] == (2, features) and module.n_features == features and out.shape[-1] in (100, 101)
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if name == "diffstft":
        assert trainable == ["stft.win_length"]
    elif name in ("mel", "stft"):
        assert trainable == []


@pytest.mark.parametrize(
    "options,message",
    [
        ({"n_bands": 0}, "n_bands must be a whole number >= 1, got 0"),  # an MKL error in forward
        ({"hop_length": 0}, "hop_length must be a whole number >= 1, got 0"),  # silently 10 ms
        ({"hop_length": -5}, "hop_length must be a whole number >= 1, got -5"),  # hann_window error
        ({"filter_length": 0}, "filter_length must be a whole number >= 1, got 0"),  # silently default
        ({"segment_frames": 0}, "segment_frames must be a whole number >= 1, got 0"),  # ZeroDivisionError
        ({"hop_length": 160.0}, "hop_length must be a whole number >= 1, got 160.0"),
        ({"temperature": 0.0}, "temperature must be a number > 0, got 0.0"),  # NaN features
        ({"f_max": 9000.0}, r"need 0 <= f_min < f_max <= sample_rate / 2 = 8000 Hz"),  # empty bands
        ({"f_min": 5000.0, "f_max": 4000.0}, r"0 <= f_min < f_max"),
        # a RuntimeError from unfold in the analyser: the history was too short for its frames
        ({"filter_length": 39}, r"filter_length 39 is shorter than energy_stride 40 .*smaller energy_stride"),
        ({"filter_length": 3, "energy_stride": 4}, "filter_length 3 is shorter than energy_stride 4"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        AdaptiveFilterbank(SR, **{"banks": ("mel", "gabor"), **options})(0.1 * torch.randn(1, 1600))
    with pytest.raises(UsageError, match="sample_rate must be a whole number >= 1, got 0"):
        AdaptiveFilterbank(0)


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("mel", {"hop_length": 0}, "hop_length >= 1, got 400.0, 0.0"),  # silently 10 ms
        ("adaptive", {"hop_length": 0}, "hop_length must be a whole number >= 1, got 0"),  # silently 10 ms
        ("stft", {"win_length": 0}, "win_length must be a number > 0 samples, got 0"),  # math domain error
        ("diffstft", {"win_length": -400}, "win_length must be a number > 0 samples, got -400"),
        ("mel", {"n_fft": 0}, "n_fft must be a whole number >= 4 samples, got 0"),  # silently 512
        ("mel", {"n_bands": 0}, "n_bands must be a whole number >= 1, got 0"),  # no features
        ("mel", {"sample_rate": 0}, "sample_rate must be a whole number >= 1, got 0"),  # math domain error
        ("stft", {"sample_rate": 16000.5}, "sample_rate must be a whole number >= 1, got 16000.5"),
    ],
)
def test_factory_refuses_bad_numbers_instead_of_defaulting(name, options, message):
    """A zero or negative setting is an error naming it, not the default in its place nor a math error."""
    with pytest.raises(UsageError, match=message):
        build_frontend(name, **{"sample_rate": SR, **options})


def test_an_empty_batch_is_a_usage_error():
    """A batch of no rows is named (it failed in a reshape inside the filterbank)."""
    with pytest.raises(UsageError, match=r"AdaptiveFilterbank: expected .* got float32 of shape \(0, 1600\)"):
        AdaptiveFilterbank(SR, n_bands=8, banks=("mel",))(torch.zeros(0, 1600))


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_stream_of_no_rows_is_a_usage_error(batch_size):
    """As DiffSTFT's: -1 raised a RuntimeError from torch.zeros; 0 made a session that took no push."""
    module = AdaptiveFilterbank(SR, n_bands=8, banks=("mel",))
    with pytest.raises(
        UsageError,
        match=f"AdaptiveFilterbank.stream: batch_size must be a whole number >= 1, got {batch_size}",
    ):
        module.stream(batch_size)


@pytest.mark.parametrize("name", ["mel", "stft", "diffstft"])
def test_factory_stft_front_ends_take_pad_mode_for_short_inputs(name):
    """An input of n_fft // 2 samples or fewer is refused with reflect padding, and the error says to
    use pad_mode='constant': the factory takes it (it refused it as an unexpected option)."""
    short = 0.1 * torch.randn(1, 100)
    with pytest.raises(UsageError, match="use pad_mode='constant' for short inputs"):
        build_frontend(name, SR)(short)
    module = build_frontend(name, SR, pad_mode="constant")
    assert module.stft.pad_mode == "constant" and module(short).shape == (1, module.n_features, 1)
    x = 0.1 * torch.randn(1, 4000)
    stft = module.stft
    window = torch.hann_window(400, periodic=True)
    expected = torch.stft(x, 512, 160, 400, window, center=True, pad_mode="constant", return_complex=True)
    torch.testing.assert_close(stft(x), expected, rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="'adaptive': pad_mode set an STFT"):
        build_frontend("adaptive", SR, pad_mode="constant")
