"""Reconstruction losses between an estimate and a target, both ``(B, C, T)`` audio in [-1, 1].

Each returns a scalar tensor; windows and mel filterbanks are precomputed buffers, so the modules
follow ``.to(device)`` and cost only the STFTs at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from audiokit.dsp import get_window, mel_filterbank


def time_l1_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute sample difference ``mean |estimate - target|``."""
    return (estimate - target).abs().mean()


def _stft(x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT (centred, reflect padding): ``(B, C, T) -> (B * C, n_fft // 2 + 1, frames)``."""
    return torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft,
        hop_length,
        window.shape[-1],
        window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )


def _power(spec: torch.Tensor) -> torch.Tensor:
    """``|Z|^2`` of a complex tensor (real and imaginary parts squared and added, no size-2 reduction)."""
    return spec.real.square() + spec.imag.square()


@dataclass
class SpectrumPair:
    """Complex STFTs ``(B * C, bins, frames)`` of an estimate and its reference at one resolution; their
    powers (and floored log powers) are computed once, on first use, however many losses read them."""

    est: torch.Tensor
    ref: torch.Tensor
    _log_powers: dict = field(default_factory=dict, repr=False)

    @cached_property
    def est_power(self) -> torch.Tensor:
        return _power(self.est)

    @cached_property
    def ref_power(self) -> torch.Tensor:
        return _power(self.ref)

    def log_powers(self, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``log max(|Z|^2, floor)`` of the estimate and the reference."""
        if floor not in self._log_powers:
            self._log_powers[floor] = tuple(
                p.clamp(min=floor).log() for p in (self.est_power, self.ref_power)
            )
        return self._log_powers[floor]


class _MultiResolutionSTFT(nn.Module):
    """Shared by the multi-resolution losses: Hann windows of ``win_lengths`` samples centred in
    ``fft_sizes``-point frames every ``hop_lengths`` samples, one resolution per entry."""

    def __init__(
        self, fft_sizes: Sequence[int], hop_lengths: Sequence[int], win_lengths: Sequence[int]
    ) -> None:
        super().__init__()
        if len(win_lengths) != len(fft_sizes):
            raise ValueError("fft_sizes, hop_lengths and win_lengths must have the same length")
        self.resolutions = list(zip(fft_sizes, hop_lengths, strict=True))
        for i, win_length in enumerate(win_lengths):
            self.register_buffer(f"window_{i}", get_window("hann", win_length), persistent=False)

    def spectra(self, estimate: torch.Tensor, target: torch.Tensor) -> Iterator[SpectrumPair]:
        """The complex STFTs ``(B * C, n_fft // 2 + 1, frames)`` of both at each resolution."""
        for i, (n_fft, hop) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            yield SpectrumPair(_stft(estimate, n_fft, hop, window), _stft(target, n_fft, hop, window))


class MultiResolutionSTFTLoss(_MultiResolutionSTFT):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions (Parallel WaveGAN).

    At each resolution, with ``S = sqrt(max(|STFT|^2, eps))``: ``||S_est - S_ref||_F / ||S_ref||_F``
    (over the whole batch) plus ``mean |log S_est - log S_ref|``. Hann windows of ``win_lengths``
    samples are centred in ``fft_sizes``-point frames every ``hop_lengths`` samples.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_lengths: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        eps: float = 1e-7,
    ) -> None:
        super().__init__(fft_sizes, hop_lengths, win_lengths)
        self.eps = eps

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_spectra(self.spectra(estimate, target))

    def from_spectra(self, pairs: Iterable[SpectrumPair]) -> torch.Tensor:
        """The loss of :meth:`spectra`'s pairs (shareable with other losses of the same resolutions)."""
        total = 0.0
        for pair in pairs:
            est_power, ref_power = pair.est_power.clamp(min=self.eps), pair.ref_power.clamp(min=self.eps)
            est, ref = est_power.sqrt(), ref_power.sqrt()
            convergence = torch.linalg.vector_norm(est - ref) / torch.linalg.vector_norm(ref)
            total = total + convergence + 0.5 * (est_power.log() - ref_power.log()).abs().mean()
        return total / len(self.resolutions)


class CompressedComplexSTFTLoss(_MultiResolutionSTFT):
    """Mean squared error between power-law compressed complex spectra, averaged over resolutions.

    At each resolution, ``Z_c = |Z|^exponent * exp(j angle Z)`` for the estimate's and the
    reference's STFT (magnitudes floored at ``sqrt(eps)``), and the loss is ``mean |E_c - R_c|^2``.
    Unlike magnitude and mel losses it penalises phase errors, weighted by the compressed reference
    magnitude, so that a decoder which predicts its own phase (an iSTFT head) keeps it coherent
    across frames and bins. Resolutions as in :class:`MultiResolutionSTFTLoss`.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_lengths: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        exponent: float = 0.3,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(fft_sizes, hop_lengths, win_lengths)
        if not 0.0 < exponent <= 1.0:
            raise ValueError(f"exponent must be in (0, 1], got {exponent}")
        self.exponent = exponent
        self.eps = eps

    # powers as exp(p log |Z|^2) from the pair's cached log powers: the same values to float rounding,
    # and on the CPU 2-3x faster than torch.pow with a fractional exponent, backward included
    def _compressed(self, spec: torch.Tensor, log_power: torch.Tensor) -> torch.Tensor:
        """``|Z|^c e^{j angle Z}`` of complex ``spec`` ``(..., F, N)`` whose floored ``log |Z|^2`` is
        ``log_power``."""
        return spec * torch.exp(log_power * ((self.exponent - 1.0) / 2.0))

    def _compressed_magnitude(self, log_power: torch.Tensor) -> torch.Tensor:
        """``|Z|^c`` from the floored ``log |Z|^2`` (as in :meth:`_compressed`)."""
        return torch.exp(log_power * (self.exponent / 2.0))

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_spectra(self.spectra(estimate, target))

    def from_spectra(self, pairs: Iterable[SpectrumPair]) -> torch.Tensor:
        """The loss of :meth:`spectra`'s pairs."""
        total = 0.0
        for pair in pairs:
            log_est, log_ref = pair.log_powers(self.eps)
            est, ref = self._compressed(pair.est, log_est), self._compressed(pair.ref, log_ref)
            total = total + _power(est - ref).mean()
        return total / len(self.resolutions)

    def magnitude_from_spectra(
        self, pairs: Iterable[SpectrumPair], excess_weight: float = 1.0
    ) -> torch.Tensor:
        """``mean w (|E|^c - |R|^c)^2`` over :meth:`spectra`'s pairs, averaged over resolutions: the
        compressed magnitudes alone, which (unlike the complex term) do not pull an estimate whose
        phase is uncertain towards zero (DeepFilterNet and GTCRN train with both).

        ``w`` is ``excess_weight`` where the estimate is louder than the reference and 1 elsewhere: above
        1 the term prefers missing energy to added energy, as PESQ does (its asymmetry factor weighs a
        disturbance up to 12 times more where the output is louder than the reference)."""
        if excess_weight <= 0:
            raise ValueError(f"excess_weight must be > 0, got {excess_weight}")
        total = 0.0
        for pair in pairs:
            est, ref = (self._compressed_magnitude(log_power) for log_power in pair.log_powers(self.eps))
            error = (est - ref).square()
            if excess_weight != 1.0:
                error = torch.where(est > ref, excess_weight * error, error)
            total = total + error.mean()
        return total / len(self.resolutions)


def _unit_phasors(spec: torch.Tensor, dim: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase steps between neighbours along ``dim`` of a complex ``spec``, as unit phasors.

    Returns ``(u, m)``: ``u = Z_b conj(Z_a) / |Z_b conj(Z_a)|`` (``eps`` keeps it finite at 0) and
    ``m = |Z_a| |Z_b|`` for each neighbouring pair ``(a, b)``.
    """
    n = spec.shape[dim]
    pair = spec.narrow(dim, 1, n - 1) * spec.narrow(dim, 0, n - 1).conj()
    parts = torch.view_as_real(pair)
    size = parts.square().sum(-1, keepdim=True)
    return parts * (size + eps).rsqrt(), size.squeeze(-1).sqrt()


class PhaseDerivativeLoss(_MultiResolutionSTFT):
    """Mismatch of instantaneous frequency and group delay, weighted by the reference magnitude.

    The absolute phase is left free (a low-bitrate decoder cannot know it, and forcing it blurs the
    output), but its derivatives must match those of the reference: the phase advance from one frame
    to the next (instantaneous frequency) and from one bin to the next (group delay). For each pair
    of neighbouring STFT cells along time and along frequency, with ``u`` the unit phasor of their
    phase difference, the loss is ``sum w |u_est - u_ref|^2 / sum w`` (that is ``2 - 2 cos`` of the
    derivative error), ``w = (|R_a| |R_b|)^(exponent / 2)`` from the reference, averaged over the two
    directions and the resolutions of :class:`MultiResolutionSTFTLoss`. In [0, 4].
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_lengths: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        exponent: float = 1.0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(fft_sizes, hop_lengths, win_lengths)
        self.exponent = exponent
        self.eps = eps

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros(())
        for pair in self.spectra(estimate, target):
            est, ref = pair.est, pair.ref
            for dim in (-1, -2):  # along frames (instantaneous frequency), along bins (group delay)
                u_est, _ = _unit_phasors(est, dim, self.eps)
                u_ref, magnitude = _unit_phasors(ref, dim, self.eps)
                weight = magnitude.pow(self.exponent / 2)
                error = (u_est - u_ref).square().sum(-1)
                total = total + (weight * error).sum() / (weight.sum() + self.eps)
        return total / (2 * len(self.resolutions))


class MultiScaleMelLoss(nn.Module):
    """L1 between log10 mel spectrograms at several window lengths, summed over scales (DAC style).

    Scale ``i`` uses a Hann window of ``window_lengths[i]`` samples (``n_fft`` equal to it, hop a
    quarter of it, centred frames) and ``n_mels[i]`` Slaney mel bands on ``|STFT|``. Its term is
    ``log_weight * mean |log10(max(M_est, clamp_eps) ** power) - log10(max(M_ref, clamp_eps) ** power)|
    + mag_weight * mean |M_est - M_ref|``.
    """

    def __init__(
        self,
        sample_rate: int,
        window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        clamp_eps: float = 1e-5,
        power: float = 1.0,
        log_weight: float = 1.0,
        mag_weight: float = 0.0,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        self.window_lengths = list(window_lengths)
        self.clamp_eps = clamp_eps
        self.power = power
        self.log_weight = log_weight
        self.mag_weight = mag_weight
        for i, (win, mels) in enumerate(zip(window_lengths, n_mels, strict=True)):
            self.register_buffer(f"window_{i}", get_window("hann", win), persistent=False)
            fb = mel_filterbank(sample_rate, win, mels, f_min, f_max)
            self.register_buffer(f"mel_{i}", fb, persistent=False)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros(())
        for i, win in enumerate(self.window_lengths):
            window, fb = getattr(self, f"window_{i}"), getattr(self, f"mel_{i}")
            est, ref = (torch.matmul(fb, _stft(x, win, win // 4, window).abs()) for x in (estimate, target))
            if self.log_weight:
                log_est = est.clamp(min=self.clamp_eps).pow(self.power).log10()
                log_ref = ref.clamp(min=self.clamp_eps).pow(self.power).log10()
                total = total + self.log_weight * (log_est - log_ref).abs().mean()
            if self.mag_weight:
                total = total + self.mag_weight * (est - ref).abs().mean()
        return total
