"""Quality metrics: PESQ, STOI/ESTOI, SI-SDR, spectral distances, LSD, codebook usage.

Signals are 1-D ``(samples,)`` tensors or arrays (or ``(1, samples)``) at ``sample_rate`` Hz unless
stated; the reference comes first. Multichannel evaluation is done by the caller, channel by channel
(:func:`audiokit.evaluation.score_pair`): a signal of several channels is a ValueError.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pesq as pesq_lib
import torch

from audiokit.dsp import mel_spectrogram, stft
from audiokit.io import resample

ArrayLike = torch.Tensor | np.ndarray

METRICS = ("pesq", "stoi", "estoi", "si_sdr", "lsd", "mel_distance", "stft_distance")
"""What a paired evaluation reports per file (:func:`audiokit.evaluation.score_pair`)."""

HIGH_BAND_LSD = "lsd_high"
"""Also reported per file when the test audio was made from a band-limited input
(:func:`high_band_log_spectral_distance` above the input's Nyquist frequency)."""


def _one_channel(shape: tuple[int, ...]) -> None:
    """ValueError unless ``shape`` holds one signal: ``(samples,)``, ``(1, samples)``, ``(samples, 1)``...
    (several channels were flattened into one signal, end to end, and scored as such)."""
    if sum(size > 1 for size in shape) > 1:
        raise ValueError(
            f"metrics score one channel (samples,), got shape {tuple(shape)}: score each channel on its own "
            "(audiokit.evaluation.score_pair averages them)"
        )


def _numpy(x: ArrayLike) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    _one_channel(x.shape)
    return x.astype(np.float64).reshape(-1)


def _torch(x: ArrayLike) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    _one_channel(x.shape)
    return x.detach().to(torch.float64).reshape(-1)


def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> None:
    """ValueError for signals of different lengths or with NaN or infinite samples (pystoi scored NaN
    test audio 1.0, a perfect STOI; the other metrics gave NaN, which the means leave out unnoticed)."""
    if reference.shape != estimate.shape:
        raise ValueError(f"reference has {reference.shape[0]} samples but estimate has {estimate.shape[0]}")
    for name, signal in (("reference", reference), ("estimate", estimate)):
        if not np.isfinite(signal).all():
            raise ValueError(f"the {name} has NaN or infinite samples")


@dataclass(frozen=True)
class PesqResult:
    """A PESQ MOS-LQO score, the mode used and the rate it was computed at.

    ``resampled`` is True when the input rate was neither 16000 nor 8000 Hz and the signals were
    resampled to ``sample_rate`` first. ``score`` is NaN when PESQ found no speech. ``segments``: how
    many consecutive pieces of at most :data:`PESQ_SEGMENT_SECONDS` the score averages (length-weighted).
    """

    score: float
    mode: str
    sample_rate: int
    resampled: bool
    segments: int = 1


PESQ_SEGMENT_SECONDS = 20.0
"""Longer signals are scored in consecutive equal pieces of at most this length: P.862 was made for
8-20 s samples, and the ``pesq`` library's C code crashes the process on ~100 s of speech (a fixed
number of utterances)."""


def pesq(reference: ArrayLike, estimate: ArrayLike, sample_rate: int) -> PesqResult:
    """ITU-T P.862 PESQ: wide-band at 16 kHz, narrow-band at 8 kHz.

    Other rates are resampled (soxr HQ): rates >= 16 kHz to 16 kHz wide-band, lower rates to 8 kHz
    narrow-band, and the result says so.
    """
    ref, est = _numpy(reference), _numpy(estimate)
    _check_pair(ref, est)
    target = 16000 if sample_rate >= 16000 else 8000
    if sample_rate != target:
        ref = resample(ref[:, None].astype(np.float32), sample_rate, target)[:, 0]
        est = resample(est[:, None].astype(np.float32), sample_rate, target)[:, 0]
    mode = "wb" if target == 16000 else "nb"
    count = math.ceil(ref.shape[0] / (PESQ_SEGMENT_SECONDS * target))
    bounds = np.linspace(0, ref.shape[0], count + 1).round().astype(int) if count > 1 else [0, ref.shape[0]]
    scores, weights = [], []
    for begin, end in itertools.pairwise(bounds):
        with np.errstate(invalid="ignore", divide="ignore"):  # pesq normalises by the peak: 0/0 on silence
            value = pesq_lib.pesq(
                target, ref[begin:end], est[begin:end], mode, on_error=pesq_lib.PesqError.RETURN_VALUES
            )
        if value >= 0:  # else no speech in this piece
            scores.append(value)
            weights.append(end - begin)
    score = float(np.average(scores, weights=weights)) if scores else float("nan")
    return PesqResult(score, mode, target, sample_rate != target, len(bounds) - 1)


def stoi(reference: ArrayLike, estimate: ArrayLike, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (pystoi; ``extended=True`` gives ESTOI), in [0, 1].

    NaN when the signal is too short for STOI (fewer than 30 frames of 25.6 ms after pystoi removes
    silent frames), where pystoi itself returns a placeholder of 1e-5.
    """
    import pystoi  # imported here: it pulls in scipy, seconds of start-up for every command otherwise

    ref, est = _numpy(reference), _numpy(estimate)
    _check_pair(ref, est)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(pystoi.stoi(ref, est, sample_rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return float("nan")  # pystoi's placeholder 1e-5 for clips under ~30 voiced frames is not a score
    return score


def si_sdr(reference: ArrayLike, estimate: ArrayLike, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019).

    With means removed from both signals, ``alpha = <s_hat, s> / ||s||^2``, target ``t = alpha * s``
    and ``SI-SDR = 10 log10(||t||^2 / ||t - s_hat||^2)``.
    """
    ref, est = _numpy(reference), _numpy(estimate)
    _check_pair(ref, est)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + eps)
    target = alpha * ref
    noise = target - est
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def multi_resolution_stft_distance(
    reference: ArrayLike,
    estimate: ArrayLike,
    resolutions: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128)),
    eps: float = 1e-7,
) -> float:
    """Mean over ``(n_fft, hop)`` resolutions of spectral convergence + mean |log magnitude| difference.

    Spectral convergence is ``||(|S| - |S_hat|)||_F / ||S||_F``; the log term is
    ``mean |ln(|S| + eps) - ln(|S_hat| + eps)|`` (Hann window, centred frames).
    """
    ref, est = _torch(reference), _torch(estimate)
    _check_pair(ref.numpy(), est.numpy())
    total = 0.0
    for n_fft, hop in resolutions:
        s_ref, s_est = stft(ref, n_fft, hop).abs(), stft(est, n_fft, hop).abs()
        convergence = torch.linalg.norm(s_ref - s_est) / (torch.linalg.norm(s_ref) + eps)
        log_distance = (torch.log(s_ref + eps) - torch.log(s_est + eps)).abs().mean()
        total += float(convergence + log_distance)
    return total / len(resolutions)


def mel_distance(
    reference: ArrayLike,
    estimate: ArrayLike,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    eps: float = 1e-5,
) -> float:
    """Mean absolute difference of ``log10(max(mel magnitude, eps))`` (Slaney mel, Hann, centred)."""
    ref, est = _torch(reference), _torch(estimate)
    _check_pair(ref.numpy(), est.numpy())
    m_ref = mel_spectrogram(ref, sample_rate, n_fft, hop_length, n_mels).clamp_min(eps).log10()
    m_est = mel_spectrogram(est, sample_rate, n_fft, hop_length, n_mels).clamp_min(eps).log10()
    return float((m_ref - m_est).abs().mean())


def _log_power_difference(
    reference: ArrayLike, estimate: ArrayLike, n_fft: int, hop_length: int, eps: float
) -> torch.Tensor:
    """``log10 P - log10 P_hat`` per ``(bin, frame)``, ``P = |STFT|^2 + eps`` (Hann, centred frames)."""
    ref, est = _torch(reference), _torch(estimate)
    _check_pair(ref.numpy(), est.numpy())
    p_ref = stft(ref, n_fft, hop_length).abs().square()
    p_est = stft(est, n_fft, hop_length).abs().square()
    return torch.log10(p_ref + eps) - torch.log10(p_est + eps)


def log_spectral_distance(
    reference: ArrayLike, estimate: ArrayLike, n_fft: int = 2048, hop_length: int = 512, eps: float = 1e-8
) -> float:
    """LSD as in AERO/NU-Wave: ``mean_frames sqrt(mean_bins (log10 P - log10 P_hat)^2)``.

    ``P = |STFT|^2 + eps`` with a 2048-sample Hann window and hop 512 (centred frames).
    """
    diff = _log_power_difference(reference, estimate, n_fft, hop_length, eps)
    return float(diff.square().mean(dim=0).sqrt().mean())


def high_band_log_spectral_distance(
    reference: ArrayLike,
    estimate: ArrayLike,
    sample_rate: int,
    low_hz: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    eps: float = 1e-8,
) -> float:
    """:func:`log_spectral_distance` over the bins strictly above ``low_hz`` (Hz) only: the band a
    bandwidth extender adds when ``low_hz`` is its input's Nyquist frequency. NaN when no bin is above."""
    diff = _log_power_difference(reference, estimate, n_fft, hop_length, eps)
    first = int(low_hz * n_fft / sample_rate) + 1
    if first >= diff.shape[0]:
        return float("nan")
    return float(diff[first:].square().mean(dim=0).sqrt().mean())


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Fraction of each codebook's entries used at least once.

    ``codes``: int ``(..., n_q, frames)``; returns float ``(n_q,)`` in [0, 1].
    """
    counts = codebook_histogram(codes, codebook_size)
    return (counts > 0).float().mean(dim=1)


def codebook_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code per codebook: ``(..., n_q, frames)`` -> ``(n_q, codebook_size)``."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
        )
    n_q = codes.shape[-2]
    flat = codes.transpose(0, -2).reshape(n_q, -1) if codes.dim() > 2 else codes
    offsets = torch.arange(n_q, device=codes.device)[:, None] * codebook_size
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=n_q * codebook_size)
    return counts.reshape(n_q, codebook_size)


def codebook_entropy(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Empirical entropy of each codebook's code distribution in bits, ``(n_q,)``.

    ``log2(codebook_size)`` means uniform use; ``2 ** entropy`` is the perplexity.
    """
    counts = codebook_histogram(codes, codebook_size).double()
    probs = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    logs = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logs).sum(dim=1)


def codebook_perplexity(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """``2 ** entropy`` per codebook: the effective number of codes in use, ``(n_q,)``."""
    return codebook_entropy(codes, codebook_size).exp2()
