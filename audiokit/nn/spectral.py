"""Causal STFT analysis/synthesis and deep filtering: the spectral blocks of enhancement models.

Frame layout ("causal"): frame ``m`` covers samples ``[(m + 1) hop - n_fft, (m + 1) hop)`` with zeros
before the signal, so a frame needs nothing past its own hop. Synthesis overlap-adds frame ``m`` at
the same place; with a ``sqrt_hann`` window on both sides at ``n_fft = 2 hop`` the frames sum back to
the input exactly. A sample is final once every frame covering it is added, which takes input up
to ``n_fft`` samples after it: the algorithmic latency of an STFT model is ``n_fft`` samples.

Each block is a :class:`~audiokit.nn.streaming.StreamingModule`: it owns its offline ``forward`` and
its streaming ``init_state`` / ``step``, and ``forward`` is the step from the zero state over the whole
input, so chunked streaming equals offline processing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.dsp import get_window
from audiokit.nn.state import ConvState, OverlapAddState
from audiokit.nn.streaming import StreamingModule


class CausalSpectrum(nn.Module, StreamingModule):
    """Complex causal STFT: audio ``(B, C, T)`` -> spectra ``(B, C, n_fft // 2 + 1, frames)``.

    ``forward`` pads the end with zeros to whole hops plus ``n_fft - hop_length`` samples, so that
    :class:`CausalInverseSpectrum` can complete every input sample: ``ceil(T / hop) + n_fft / hop - 1``
    frames. Streaming state: the last ``n_fft - hop_length`` input samples.
    """

    def __init__(
        self, n_fft: int = 320, hop_length: int = 160, window: str = "sqrt_hann", channels: int = 1
    ) -> None:
        super().__init__()
        self.channels = channels
        if n_fft % hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop_length ({hop_length})")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("window", get_window(window, n_fft), persistent=False)

    @property
    def history_length(self) -> int:
        """Input samples a streaming step keeps: ``n_fft - hop_length``."""
        return self.n_fft - self.hop_length

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        shape = (batch_size, self.channels, self.history_length)
        return ConvState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        """Spectra ``(B, C, bins, k)`` of the next ``x (B, C, k * hop_length)`` samples; updates ``state``."""
        return self.spectrum(self.frames(x, state))

    def frames(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        """The next ``k`` frames ``(B, C, k, n_fft)``, not windowed, that end in ``x (B, C, k * hop_length)``;
        updates ``state``."""
        if x.shape[-1] % self.hop_length:
            raise ValueError(
                f"a chunk of {x.shape[-1]} samples is not a multiple of the hop {self.hop_length}"
            )
        if not x.shape[-1]:  # no new samples: no frames, the history stays
            return x.new_zeros(*x.shape[:-1], 0, self.n_fft)
        x = torch.cat([state.history, x], -1)
        state.history = x[..., x.shape[-1] - self.history_length :]
        return x.unfold(-1, self.n_fft, self.hop_length)

    def spectrum(self, frames: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
        """Complex spectra ``(B, C, bins, k)`` of ``frames (B, C, k, n_fft)`` under ``window (n_fft,)``
        (default: the analysis window)."""
        if not frames.shape[-2]:
            empty = frames.new_zeros(*frames.shape[:-2], self.n_bins, 0)
            return torch.complex(empty, empty)
        windowed = frames * (self.window if window is None else window)
        return torch.fft.rfft(windowed, dim=-1).transpose(-1, -2).contiguous()  # .real: stride 1 (AOTI)

    def all_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Every frame ``(B, C, frames, n_fft)`` of :meth:`forward`, not windowed: ``x (B, C, T)`` with its
        end padded with zeros to whole hops plus ``n_fft - hop_length`` samples."""
        extra = (-x.shape[-1]) % self.hop_length + self.history_length
        return self.frames(F.pad(x, (0, extra)), self.init_state(x.shape[0], x.device, x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrum(self.all_frames(x))


class CausalInverseSpectrum(nn.Module, StreamingModule):
    """Inverse of :class:`CausalSpectrum`: spectra ``(B, C, bins, frames)`` -> audio by overlap-add.

    ``step`` turns ``k`` frames into the ``k * hop_length`` samples they complete; these lag the
    input by ``n_fft - hop_length`` samples (the first that many outputs of a stream come before
    its start). ``forward(spec, length)`` drops that lag and returns ``(B, C, length)``.
    Streaming state: the overlap-add tail, ``n_fft - hop_length`` samples.
    """

    def __init__(
        self, n_fft: int = 320, hop_length: int = 160, window: str = "sqrt_hann", channels: int = 1
    ) -> None:
        super().__init__()
        self.channels = channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", get_window(window, n_fft), persistent=False)
        # the windowed inverse real DFT as two products (real and imaginary parts, (bins, n_fft) each):
        # what compiled steps use, since AOTInductor leaves FFTs and complex tensors to library calls
        eye = torch.eye(n_fft // 2 + 1, dtype=torch.float64)
        window64 = get_window(window, n_fft).double()
        for name, part in (("real_basis", eye), ("imag_basis", 1j * eye)):
            basis = torch.fft.irfft(part.to(torch.complex128), n=n_fft, dim=-1) * window64
            self.register_buffer(name, basis.float(), persistent=False)

    @property
    def delay(self) -> int:
        """Samples by which ``step``'s output lags its input: ``n_fft - hop_length``."""
        return self.n_fft - self.hop_length

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> OverlapAddState:
        shape = (batch_size, self.channels, self.delay)
        return OverlapAddState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, spec: torch.Tensor, state: OverlapAddState, final: bool = False) -> torch.Tensor:
        """Audio ``(B, C, k * hop_length)`` completed by ``k`` frames ``spec (B, C, bins, k)``."""
        if not spec.shape[-1]:  # no new frames: no samples, the tail stays
            return spec.real.new_zeros(*spec.shape[:-2], 0)
        frames = torch.fft.irfft(spec.transpose(-1, -2), n=self.n_fft, dim=-1) * self.window  # (B, C, k, N)
        return self._overlap_add(frames, state)

    def step_parts(
        self, real: torch.Tensor, imag: torch.Tensor, state: OverlapAddState, final: bool = False
    ) -> torch.Tensor:
        """:meth:`step` of the spectra's real and imaginary parts (each ``(B, C, bins, k)``); traced for
        compilation, the inverse DFT is two products (no complex tensor, no FFT call)."""
        if not torch.compiler.is_compiling():
            return self.step(torch.complex(real, imag), state, final)
        *lead, bins, count = real.shape
        real, imag = (part.transpose(-1, -2).reshape(-1, bins) for part in (real, imag))
        frames = real @ self.real_basis + imag @ self.imag_basis  # 2-D products: one GEMM each
        return self._overlap_add(frames.reshape(*lead, count, self.n_fft), state)

    def _overlap_add(self, frames: torch.Tensor, state: OverlapAddState) -> torch.Tensor:
        """Audio ``(B, C, k * hop_length)`` completed by windowed frames ``(B, C, k, n_fft)``."""
        batch, channels, count, _ = frames.shape
        length = (count - 1) * self.hop_length + self.n_fft
        out = F.fold(
            frames.reshape(batch * channels, count, self.n_fft).transpose(1, 2),
            output_size=(1, length),
            kernel_size=(1, self.n_fft),
            stride=(1, self.hop_length),
        ).reshape(batch, channels, length)
        out = torch.cat([out[..., : self.delay] + state.tail, out[..., self.delay :]], -1)
        ready = count * self.hop_length
        state.tail = out[..., ready:]
        return out[..., :ready]

    def forward(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        state = self.init_state(spec.shape[0], spec.device, self.window.dtype)
        return self.step(spec, state)[..., self.delay : self.delay + length]


class DeepFilter(nn.Module, StreamingModule):
    """Complex FIR filtering along time per bin: ``y[m] = sum_k coef[m, k] * x[m - k]``, ``k < order``.

    ``x``: complex ``(B, bins, frames)``; ``coef``: complex ``(B, bins, frames, order)``. Causal (past
    frames only). Streaming state: the last ``order - 1`` frames of ``x`` as real/imag
    ``(B, 2 * bins, order - 1)``. ``step`` takes ``(x, coef)`` as one pair; :meth:`filter_parts` is the
    same step on real and imaginary parts.
    """

    def __init__(self, bins: int, order: int) -> None:
        super().__init__()
        self.bins = bins
        self.order = order

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        return ConvState(torch.zeros(batch_size, 2 * self.bins, self.order - 1, device=device, dtype=dtype))

    def step(
        self, pair: tuple[torch.Tensor, torch.Tensor], state: ConvState, final: bool = False
    ) -> torch.Tensor:
        x, coef = pair
        return torch.complex(*self.filter_parts(x.real, x.imag, coef.real, coef.imag, state))

    def filter_parts(
        self,
        x_real: torch.Tensor,
        x_imag: torch.Tensor,
        coef_real: torch.Tensor,
        coef_imag: torch.Tensor,
        state: ConvState,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step` in real arithmetic (what compiled steps fuse; complex operations each fall back
        to a library call there): real and imaginary parts ``(B, bins, frames)`` of ``x`` and ``(B,
        bins, frames, order)`` of ``coef`` -> those of ``y``."""
        bins, frames = self.bins, x_real.shape[-1]
        real = torch.cat([state.history[:, :bins], x_real], -1)  # (B, bins, order - 1 + frames)
        imag = torch.cat([state.history[:, bins:], x_imag], -1)
        state.history = torch.cat([real[..., frames:], imag[..., frames:]], 1)
        # taps first and contiguous: a model's head gives the taps innermost, and products that read
        # every order-th value ran at a fifth of the speed over many frames
        taps_real, taps_imag = coef_real.movedim(-1, 0).contiguous(), coef_imag.movedim(-1, 0).contiguous()
        out_real = out_imag = None
        for k in range(self.order):  # tap k: x[m - k], a slice of the frames (no unfolded copy)
            start = self.order - 1 - k
            lag_real, lag_imag = real[..., start : start + frames], imag[..., start : start + frames]
            c_real, c_imag = taps_real[k], taps_imag[k]
            tap_real, tap_imag = lag_real * c_real - lag_imag * c_imag, lag_real * c_imag + lag_imag * c_real
            out_real = tap_real if out_real is None else out_real + tap_real
            out_imag = tap_imag if out_imag is None else out_imag + tap_imag
        return out_real, out_imag

    def forward(self, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return self.step((x, coef), self.init_state(x.shape[0], x.device, x.real.dtype))
