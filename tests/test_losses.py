"""audiokit.losses: spectral losses against librosa/numpy, adversarial losses, discriminators that learn."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from audiokit.losses import (
    CombinedDiscriminator,
    CompressedComplexSTFTLoss,
    MultiBandMultiResolutionDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    PhaseDerivativeLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    time_l1_loss,
)


@pytest.fixture(scope="module")
def speech_pair(speech_files) -> tuple[torch.Tensor, torch.Tensor]:
    """Two different real 16 kHz speech excerpts, shaped (2, 1, 8000) each."""
    clips = []
    for path in speech_files[:2]:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == 16000
        clips.append(torch.from_numpy(audio[:16000, 0]))
    x, y = torch.stack(clips).reshape(2, 2, 8000).unbind(1)
    return x[:, None], y[:, None]


def test_time_l1_matches_numpy(speech_pair):
    x, y = speech_pair
    assert time_l1_loss(x, y).item() == pytest.approx(np.mean(np.abs(x.numpy() - y.numpy())), rel=1e-6)


def _librosa_stft(a: torch.Tensor, n_fft: int, hop: int, win: int) -> np.ndarray:
    """The independent reference STFT: centred, reflect-padded, Hann window of ``win`` samples."""
    return librosa.stft(
        a.numpy()[:, 0].astype(np.float64),
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window="hann",
        center=True,
        pad_mode="reflect",
    )


def test_multi_resolution_stft_matches_librosa(speech_pair):
    est, ref = speech_pair
    sizes, hops, wins = (256, 512, 128), (64, 100, 32), (200, 400, 128)
    loss = MultiResolutionSTFTLoss(sizes, hops, wins)
    expected = 0.0
    for n_fft, hop, win in zip(sizes, hops, wins, strict=True):

        def mag(a, n_fft=n_fft, hop=hop, win=win):
            return np.sqrt(np.maximum(np.abs(_librosa_stft(a, n_fft, hop, win)) ** 2, 1e-7))

        e, r = mag(est), mag(ref)
        expected += np.linalg.norm(e - r) / np.linalg.norm(r) + np.mean(np.abs(np.log(e) - np.log(r)))
    assert loss(est, ref).item() == pytest.approx(expected / 3, rel=1e-4)


@pytest.mark.parametrize("exponent", [0.3, 1.0])
def test_compressed_complex_stft_matches_librosa(speech_pair, exponent):
    est, ref = speech_pair
    sizes, hops, wins = (256, 512), (64, 100), (200, 400)
    loss = CompressedComplexSTFTLoss(sizes, hops, wins, exponent=exponent)
    expected = 0.0
    for n_fft, hop, win in zip(sizes, hops, wins, strict=True):

        def compressed(a, n_fft=n_fft, hop=hop, win=win):
            s = _librosa_stft(a, n_fft, hop, win)
            return s * np.maximum(np.abs(s) ** 2, 1e-10) ** ((exponent - 1) / 2)

        expected += np.mean(np.abs(compressed(est) - compressed(ref)) ** 2)
    assert loss(est, ref).item() == pytest.approx(expected / 2, rel=1e-4)


def test_compressed_magnitude_term_matches_librosa_and_ignores_the_phase(speech_pair):
    est, ref = speech_pair
    sizes, hops, wins = (256, 512), (64, 100), (200, 400)
    loss = CompressedComplexSTFTLoss(sizes, hops, wins, exponent=0.3)
    expected = 0.0
    for n_fft, hop, win in zip(sizes, hops, wins, strict=True):

        def compressed(a, n_fft=n_fft, hop=hop, win=win):
            return np.maximum(np.abs(_librosa_stft(a, n_fft, hop, win)) ** 2, 1e-10) ** 0.15

        expected += np.mean((compressed(est) - compressed(ref)) ** 2)
    assert loss.magnitude_from_spectra(loss.spectra(est, ref)).item() == pytest.approx(expected / 2, rel=1e-4)
    flipped = loss.magnitude_from_spectra(loss.spectra(-ref, ref)).item()
    assert flipped == pytest.approx(0.0, abs=1e-6) and loss(-ref, ref).item() > 0.1


def test_excess_weight_weighs_only_where_the_estimate_is_louder(speech_pair):
    est, ref = speech_pair
    sizes, hops, wins = (256,), (64,), (200,)
    loss = CompressedComplexSTFTLoss(sizes, hops, wins, exponent=0.3)

    def compressed(a):
        return np.maximum(np.abs(_librosa_stft(a, 256, 64, 200)) ** 2, 1e-10) ** 0.15

    error = compressed(est) - compressed(ref)
    expected = np.mean(np.where(error > 0, 5.0, 1.0) * error**2)
    weighted = loss.magnitude_from_spectra(loss.spectra(est, ref), excess_weight=5.0).item()
    assert weighted == pytest.approx(expected, rel=1e-4)
    # a louder copy pays the weight in full, a quieter one not at all
    symmetric = [loss.magnitude_from_spectra(loss.spectra(g * ref, ref)).item() for g in (2.0, 0.5)]
    asymmetric = [
        loss.magnitude_from_spectra(loss.spectra(g * ref, ref), excess_weight=5.0).item() for g in (2.0, 0.5)
    ]
    assert asymmetric[0] == pytest.approx(5.0 * symmetric[0], rel=1e-4)
    assert asymmetric[1] == pytest.approx(symmetric[1], rel=1e-4)
    with pytest.raises(ValueError, match="excess_weight"):
        loss.magnitude_from_spectra(loss.spectra(est, ref), excess_weight=0.0)


def test_complex_loss_sees_the_phase_that_magnitude_losses_miss(speech_pair):
    # -x has x's magnitude spectrum and every phase turned by pi: the mel and STFT-magnitude losses
    # read 0, the compressed complex loss reads |2 X_c|^2, four times its value for a silent output
    x, _ = speech_pair
    assert MultiScaleMelLoss(16000)(-x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert MultiResolutionSTFTLoss()(-x, x).item() == pytest.approx(0.0, abs=1e-6)
    complex_loss = CompressedComplexSTFTLoss()
    silent = complex_loss(torch.zeros_like(x), x).item()
    assert silent > 0.1 and complex_loss(-x, x).item() == pytest.approx(4 * silent, rel=1e-3)


def test_phase_derivative_loss_matches_numpy(speech_pair):
    est, ref = speech_pair
    sizes, hops, wins = (256, 512), (64, 100), (200, 400)
    loss = PhaseDerivativeLoss(sizes, hops, wins, exponent=0.6)
    expected = []
    for n_fft, hop, win in zip(sizes, hops, wins, strict=True):
        e, r = _librosa_stft(est, n_fft, hop, win), _librosa_stft(ref, n_fft, hop, win)
        for axis in (2, 1):  # along frames, then along bins: phase steps between neighbours

            def steps(z, axis=axis):
                n = z.shape[axis]
                pair = np.take(z, range(1, n), axis) * np.conj(np.take(z, range(n - 1), axis))
                return pair / np.sqrt(np.abs(pair) ** 2 + 1e-12), np.abs(pair)

            (u_e, _), (u_r, magnitude) = steps(e), steps(r)
            weight = magnitude**0.3
            expected.append(np.sum(weight * np.abs(u_e - u_r) ** 2) / np.sum(weight))
    assert loss(est, ref).item() == pytest.approx(np.mean(expected), rel=1e-4)


def test_phase_derivative_loss_ignores_absolute_phase_but_not_frequency():
    t = torch.arange(16000) / 16000
    tone = 0.1 * torch.sin(2 * torch.pi * 200 * t)[None, None]
    loss = PhaseDerivativeLoss()
    assert loss(-tone, tone).item() == pytest.approx(0.0, abs=1e-5)  # every phase turned by pi
    detuned = 0.1 * torch.sin(2 * torch.pi * 207 * t)[None, None]  # phase advances 7 Hz too fast
    assert loss(detuned, tone).item() > 0.1


@pytest.mark.parametrize(("power", "mag_weight"), [(1.0, 0.0), (2.0, 1.0)])
def test_multi_scale_mel_matches_librosa(speech_pair, power, mag_weight):
    est, ref = speech_pair
    wins, mels = (32, 128, 512, 2048), (5, 20, 80, 320)
    loss = MultiScaleMelLoss(16000, wins, mels, power=power, mag_weight=mag_weight)
    expected = 0.0
    for win, n_mels in zip(wins, mels, strict=True):

        def mel(a, win=win, n_mels=n_mels):
            return librosa.feature.melspectrogram(
                y=a.numpy()[:, 0].astype(np.float64),
                sr=16000,
                n_fft=win,
                hop_length=win // 4,
                window="hann",
                center=True,
                pad_mode="reflect",
                power=1.0,
                n_mels=n_mels,
            )

        e, r = mel(est), mel(ref)
        expected += np.mean(
            np.abs(np.log10(np.maximum(e, 1e-5) ** power) - np.log10(np.maximum(r, 1e-5) ** power))
        )
        expected += mag_weight * np.mean(np.abs(e - r))
    assert loss(est, ref).item() == pytest.approx(expected, rel=1e-4)


def test_spectral_losses_finite_on_silence_and_zero_for_identity(speech_pair):
    x, _ = speech_pair
    for loss in (
        MultiScaleMelLoss(16000),
        MultiResolutionSTFTLoss((256, 128), (64, 32), (256, 128)),
        CompressedComplexSTFTLoss((256, 128), (64, 32), (256, 128)),
        PhaseDerivativeLoss((256, 128), (64, 32), (256, 128)),
    ):
        silent = torch.zeros_like(x, requires_grad=True)
        value = loss(silent, torch.zeros_like(x)) + loss(silent, x)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(silent.grad).all()
        assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_adversarial_losses_by_hand():
    real = [torch.tensor([2.0, 0.5]), torch.tensor([[-1.0]])]
    fake = [torch.tensor([-2.0, 0.0]), torch.tensor([[3.0]])]
    # hinge D: mean(relu(1 - real)) + mean(relu(1 + fake)) per discriminator, averaged
    d_hinge = ((0 + 0.5) / 2 + (0 + 1) / 2 + 2 + 4) / 2
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(d_hinge)
    d_ls = ((1 + 0.25) / 2 + (4 + 0) / 2 + 4 + 9) / 2
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx(d_ls)
    assert generator_loss(fake, "hinge").item() == pytest.approx(((3 + 1) / 2 + 0) / 2)
    assert generator_loss(fake, "lsgan").item() == pytest.approx(((9 + 1) / 2 + 4) / 2)
    with pytest.raises(ValueError, match="unknown adversarial"):
        generator_loss(fake, "wasserstein")


def test_feature_matching_by_hand_and_detached():
    real = [[torch.tensor([1.0, -3.0], requires_grad=True)], [torch.tensor([2.0]), torch.tensor([4.0, 4.0])]]
    fake = [[torch.tensor([0.0, 0.0], requires_grad=True)], [torch.tensor([1.0]), torch.tensor([4.0, 6.0])]]
    value = feature_matching_loss(real, fake)
    assert value.item() == pytest.approx((2.0 + 1.0 + 1.0) / 3)
    assert feature_matching_loss(real, fake, normalize=True).item() == pytest.approx((1.0 + 0.5 + 0.25) / 3)
    value.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


def small_discriminators():
    torch.manual_seed(0)
    return {
        "msstft": MultiScaleSTFTDiscriminator(filters=8, n_ffts=(256, 512, 128)),
        "mpd": MultiPeriodDiscriminator(periods=(2, 3, 5), widths=(16, 32, 32)),
        "mrd": MultiBandMultiResolutionDiscriminator(filters=8, window_lengths=(512, 256)),
    }


def test_discriminator_output_structure():
    x = torch.randn(3, 2, 4000, requires_grad=True)
    expected_subs = {"msstft": 3, "mpd": 3, "mrd": 2}
    torch.manual_seed(0)
    stereo = {
        "msstft": MultiScaleSTFTDiscriminator(channels=2, filters=8, n_ffts=(256, 512, 128)),
        "mpd": MultiPeriodDiscriminator(channels=2, periods=(2, 3, 5), widths=(8, 16, 16)),
        "mrd": MultiBandMultiResolutionDiscriminator(channels=2, filters=8, window_lengths=(512, 256)),
    }
    for name, disc in stereo.items():
        logits, features = disc(x)
        assert len(logits) == len(features) == expected_subs[name]
        for lg, fmaps in zip(logits, features, strict=True):
            assert lg.shape[:2] == (3, 1) and lg.dim() == 4 and torch.isfinite(lg).all()
            assert fmaps[-1] is lg and all(f.shape[0] == 3 for f in fmaps)
        assert len(features[0]) == {"msstft": 6, "mpd": 4, "mrd": 26}[name]
    logits, features = CombinedDiscriminator(stereo["mpd"], stereo["mrd"])(x)
    assert len(logits) == len(features) == 5
    sum(lg.mean() for lg in logits).backward()
    assert x.grad.abs().sum() > 0


def sines(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    freq = 200 + 1800 * torch.rand(n, 1, 1, generator=gen)
    t = torch.arange(length) / 16000
    return 0.5 * torch.sin(2 * torch.pi * freq * t + 6.28 * torch.rand(n, 1, 1, generator=gen))


@pytest.fixture
def one_thread():
    """Small convs train much faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["msstft", "mpd", "mrd"])
def test_discriminators_learn_to_separate_sines_from_noise(name, one_thread):
    disc = small_discriminators()[name]
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        real, fake = sines(4, 2048, gen), 0.3 * torch.randn(4, 1, 2048, generator=gen)
        loss = discriminator_loss(disc(real)[0], disc(fake)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        real_score = torch.stack([lg.mean() for lg in disc(sines(8, 2048, gen))[0]]).mean()
        noise = 0.3 * torch.randn(8, 1, 2048, generator=gen)
        fake_score = torch.stack([lg.mean() for lg in disc(noise)[0]]).mean()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])
    assert real_score - fake_score > 0.5
