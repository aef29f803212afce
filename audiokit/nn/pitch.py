"""Causal pitch analysis for spectral enhancers: per frame, the period and the spectrum one period back.

RNNoise's idea, in the frame layout of :class:`~audiokit.nn.spectral.CausalSpectrum` (frame ``m``
covers samples ``[(m + 1) hop - n_fft, (m + 1) hop)``): for each frame, the lag ``L`` in
``[min_lag, max_lag]`` samples whose past segment ``[(m + 1) hop - n_fft - L, (m + 1) hop - L)``
correlates best with the frame (normalised cross-correlation, with a small penalty on longer lags
against octave errors), that correlation (the frame's periodicity, in [-1, 1]), and the complex
spectrum ``P`` of the lagged segment under the same window as ``X``. Voiced speech repeats with its
period, noise does not, so ``P`` agrees with ``X`` on the harmonics: a comb filter ``X + b P`` and the
per-band correlation of ``X`` with ``P`` (:func:`band_pitch_correlation`) separate them.

Only past samples are used: no latency beyond the frame's. The lag search takes one float32 FFT
correlation per frame, whose rows are rounded the same whatever the number of frames in a call (float64
FFT rows are not), so streaming chooses exactly the lags offline processing chooses (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.dsp import get_window
from audiokit.nn.state import ConvState
from audiokit.nn.streaming import StreamingModule

LAG_PENALTY = 0.05
"""Correlation given up per ``max_lag - min_lag`` samples of lag when choosing it (octave errors)."""


class PitchSpectrum(nn.Module, StreamingModule):
    """Audio ``(B, 1, T)`` -> ``(P, periodicity, lag)`` per causal frame: ``P`` complex
    ``(B, n_fft // 2 + 1, frames)``, ``periodicity`` ``(B, frames)`` in [-1, 1], ``lag`` ``(B, frames)``
    in samples (long).

    ``forward`` makes the frames :class:`~audiokit.nn.spectral.CausalSpectrum` makes of the same input
    (the end padded alike). ``n_fft`` and ``max_lag`` are multiples of ``hop_length``. Streaming state: the
    last ``n_fft + max_lag - hop_length`` input samples.
    """

    def __init__(
        self,
        n_fft: int = 320,
        hop_length: int = 160,
        min_lag: int = 40,
        max_lag: int = 320,
        window: str = "sqrt_hann",
    ) -> None:
        super().__init__()
        if n_fft % hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop_length ({hop_length})")
        if not 0 < min_lag < max_lag:
            raise ValueError(f"need 0 < min_lag < max_lag, got {min_lag} and {max_lag}")
        if max_lag % hop_length:  # the running energies sum whole hops of history
            raise ValueError(f"max_lag ({max_lag}) must be a multiple of hop_length ({hop_length})")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.min_lag = min_lag
        self.max_lag = max_lag
        self.fft_size = fast_fft_size(n_fft + max_lag)
        self.register_buffer("window", get_window(window, n_fft), persistent=False)
        lags = torch.arange(min_lag, max_lag + 1, dtype=torch.float64)
        self.register_buffer(
            "penalty", LAG_PENALTY * (lags - min_lag) / (max_lag - min_lag), persistent=False
        )

    @property
    def history_length(self) -> int:
        """Input samples a streaming step keeps: ``n_fft + max_lag - hop_length``."""
        return self.n_fft + self.max_lag - self.hop_length

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        return ConvState(torch.zeros(batch_size, 1, self.history_length, device=device, dtype=dtype))

    def step(
        self, x: torch.Tensor, state: ConvState, final: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(P, periodicity, lag)`` of the frames ending in the next ``x (B, 1, k * hop_length)``."""
        if x.shape[-1] % self.hop_length:
            raise ValueError(
                f"a chunk of {x.shape[-1]} samples is not a multiple of the hop {self.hop_length}"
            )
        if not x.shape[-1]:  # no new samples: no frames, the history stays
            empty = x.new_zeros(x.shape[0], self.n_fft // 2 + 1, 0)
            return (
                torch.complex(empty, empty),
                x.new_zeros(x.shape[0], 0),
                x.new_zeros(x.shape[0], 0, dtype=torch.long),
            )
        x = torch.cat([state.history, x], -1)
        state.history = x[..., x.shape[-1] - self.history_length :]
        span = self.n_fft + self.max_lag
        spans = x[:, 0].unfold(-1, span, self.hop_length)  # (B, k, span): max_lag samples, then the frame
        lag, periodicity = self._search(spans.float(), self._running_energy(x[:, 0]))
        start = (self.max_lag - lag).unsqueeze(-1) + torch.arange(self.n_fft, device=x.device)
        lagged = spans.gather(-1, start) * self.window  # (B, k, n_fft)
        return torch.fft.rfft(lagged, dim=-1).transpose(1, 2).contiguous(), periodicity.to(x.dtype), lag

    def _running_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Running sums of squares within each span of ``x (B, samples)``, float64 ``(B, k, span)``:
        entry ``p`` of span ``m`` sums its first ``p + 1`` squares, as its earlier hops' totals (added in
        order) plus a running sum within the hop. Spans start on hop boundaries, so every chunking of a
        stream gives the same sums."""
        hop = self.hop_length
        hops = (self.n_fft + self.max_lag) // hop  # a span's hops
        within = x.double().square().unflatten(-1, (-1, hop)).cumsum(-1)  # (B, blocks, hop)
        totals = within[..., -1]
        spans = totals.shape[-1] - hops + 1
        earlier = [torch.zeros_like(totals[..., :spans])]
        for block in range(1, hops):
            earlier.append(earlier[-1] + totals[..., block - 1 : block - 1 + spans])
        blocks = within.unfold(1, hops, 1).transpose(-1, -2)  # (B, k, hops, hop)
        return (torch.stack(earlier, -1).unsqueeze(-1) + blocks).flatten(-2)

    def _search(self, spans: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best lag (long) and its normalised correlation for float32 ``spans (B, k, n_fft + max_lag)``
        and their running sums of squares ``energy`` (float64, the same shape): the correlations by FFT
        in float32, the energies as differences of the running sums."""
        n, lo, hi = self.n_fft, self.min_lag, self.max_lag
        size, candidates = self.fft_size, hi - lo + 1
        frame = spans[..., hi:]
        # circular cross-correlation c[j] = sum_i frame[i] spans[(j + i) mod size], the segment starting
        # at j = max_lag - lag; j + i < n + hi - lo <= size for every candidate, so nothing wraps around
        corr = torch.fft.irfft(torch.fft.rfft(spans, size) * torch.fft.rfft(frame, size).conj(), size)
        cross = corr[..., :candidates].double()  # lags hi..lo
        # segment [j, j + n) holds energy[j + n - 1] - energy[j - 1] (energy[-1] being 0)
        lagged_energy = energy[..., n - 1 : n - 1 + candidates] - F.pad(energy[..., : candidates - 1], (1, 0))
        frame_energy = energy[..., -1:] - energy[..., hi - 1 : hi]
        score = cross / (frame_energy * lagged_energy.clamp_min(0.0) + 1e-12).sqrt()
        # a segment 60 dB below the frame is no candidate (its float32 correlation is rounding noise)
        score = score.masked_fill(lagged_energy <= 1e-6 * frame_energy, 0.0).flip(-1)  # lags lo..hi
        best = (score - self.penalty).argmax(-1)
        periodicity = score.gather(-1, best.unsqueeze(-1)).squeeze(-1).clamp(-1.0, 1.0)
        return best + lo, periodicity

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        extra = (-x.shape[-1]) % self.hop_length + self.n_fft - self.hop_length
        return self.step(F.pad(x, (0, extra)), self.init_state(x.shape[0], x.device, x.dtype))


def fast_fft_size(length: int) -> int:
    """The smallest size >= ``length`` with no prime factor above 5 (FFTs of such sizes are fast)."""
    size = length
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1


def band_pitch_correlation(
    spec: torch.Tensor,
    pitch_spec: torch.Tensor,
    bands: torch.Tensor,
    spec_band_power: torch.Tensor | None = None,
) -> torch.Tensor:
    """RNNoise's per-band pitch correlation ``Re <X, P>_b / sqrt(|X|_b^2 |P|_b^2)`` in [-1, 1],
    ``(N, frames, bands)`` for complex ``spec``, ``pitch_spec`` ``(N, bins, frames)`` and band weights
    ``bands (bands, bins)``; ``spec_band_power``: ``|X|_b^2 (N, frames, bands)`` where the caller has
    it already (``einsum("fb,nbm->nmf", bands, |X|^2)``, computed here otherwise)."""

    def band_sums(v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("fb,nbm->nmf", bands, v)

    cross = band_sums(spec.real * pitch_spec.real + spec.imag * pitch_spec.imag)
    power_x = (
        band_sums(spec.real.square() + spec.imag.square()) if spec_band_power is None else spec_band_power
    )
    power_p = band_sums(pitch_spec.real.square() + pitch_spec.imag.square())
    return (cross / (power_x * power_p + 1e-12).sqrt()).clamp(-1.0, 1.0)
