"""Differentiable STFT: window length and hop are continuous, trainable parameters (samples).

Model. Frame ``k`` is centred on the continuous position ``c_k`` (samples of the input):
``c_k = k * hop`` for one hop, ``c_k = hop_0 + ... + hop_{k-1}`` for per-frame hops. With
``N = n_fft``, ``s_k = floor(c_k) - N // 2`` and ``d_k = c_k - floor(c_k)``::

    X_k(f) = sum_{m=0}^{N-1} x[s_k + m] * w(m - N // 2 - d_k; L_k) * exp(-2j pi f (m - d_k) / N)

where ``w(u; L)`` is a smooth window of continuous length ``L`` (see ``frontends.windows``) on
the fixed ``N``-sample support, so tensor shapes never depend on ``L``. The input is padded by
``N // 2`` on both sides (reflect by default) exactly like ``torch.stft(center=True)``, and there
are as many frames as centres with ``c_k <= T`` (``1 + T // hop`` for an integer hop; ``c_k < T`` for
an odd ``N``, whose frame centred on ``T`` would read one sample past the padding, as ``torch.stft``
counts them). For an even
integer ``L`` and an even ``N``, an integer hop and ``d_k = 0`` this is ``torch.stft`` with the
periodic window zero-padded to ``N`` (an odd ``L``'s periodic window peaks half a sample off its
centre, and ``torch.stft`` puts a window with ``N - L`` odd half a sample off ours).

Gradients reach ``L`` through the window and the frame positions through the window offset
``d_k`` and the phase term. The fractional offset is continuous across integer crossings as long
as the window is zero at the support edges (``L <= N - 2`` for Hann/Blackman).

Fast path: for one integer-valued hop the transform is ``torch.stft`` with the window built from
``L``; if the hop needs a gradient, its first derivative is added as ``(c_k - c_k.detach()) * dX_k/dc_k``
with ``dX_k/dc_k = -STFT_{w'}(x) + 2j pi f / N * X_k`` (one more ``torch.stft`` with the window
derivative ``w'``), which is exact at ``d_k = 0``. Second derivatives w.r.t. the hop are not provided.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.frontends.windows import WINDOWS, continuous_window

PAD_MODES = ("reflect", "constant")


def batch_audio(x: Any, where: str, batch_size: int | None = None) -> torch.Tensor:
    """``x`` if it is a real floating-point torch tensor ``(batch, samples)`` of at least one row
    (``batch_size`` rows when given), else :class:`~audiokit.errors.UsageError` naming ``where`` and
    what ``x`` is (an empty batch failed deep inside ``torch.stft`` or the FFT)."""
    rows = "batch >= 1" if batch_size is None else batch_size
    if not isinstance(x, torch.Tensor):
        got = f"{type(x).__module__}.{type(x).__qualname__}"
    elif not x.is_floating_point() or x.dim() != 2 or not x.shape[0] or batch_size not in (None, x.shape[0]):
        got = f"{str(x.dtype).removeprefix('torch.')} of shape {tuple(x.shape)}"
    else:
        return x
    raise UsageError(f"{where}: expected real float audio of shape ({rows}, samples), got {got}")


class InwardClamp(torch.autograd.Function):
    """``x.clamp(low, high)`` whose gradient also reaches an ``x`` outside ``[low, high]`` when a descent
    step would move it back inside (a plain clamp gives it none: an optimiser step past a bound left
    the parameter there for good, whatever the loss wanted later); the outward gradient is dropped."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        outward = ((x > ctx.high) & (grad < 0)) | ((x < ctx.low) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None, None


class DiffSTFT(nn.Module):
    """STFT with trainable continuous window length and hop.

    ``forward(x)``: real ``(B, T)`` -> complex ``(B, n_fft // 2 + 1, frames)``.

    Args:
        n_fft: FFT size and fixed window support (samples).
        win_length: initial window length (samples, continuous; clamped to ``[2, n_fft]`` when used).
        hop_length: initial hop (samples, continuous, clamped to ``>= 1`` when used).
        window: ``hann``, ``blackman`` or ``gaussian`` (std = ``win_length / 6``).
        learnable: whether ``win_length`` and ``hop_length`` receive gradients.
        time_varying: one length and one hop per frame (``max_frames`` of each; ``hop_length[k]``
            is the distance from frame ``k`` to ``k + 1``).
        max_frames: number of per-frame parameters; required with ``time_varying``, ignored without it.
        pad_mode: ``reflect`` (like ``torch.stft``) or ``constant`` (zeros).
    """

    def __init__(
        self,
        n_fft: int,
        win_length: float,
        hop_length: float,
        window: str = "hann",
        learnable: bool = True,
        time_varying: bool = False,
        *,
        max_frames: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        if window not in WINDOWS:
            raise UsageError(f"DiffSTFT: unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
        if pad_mode not in PAD_MODES:
            raise UsageError(f"DiffSTFT: unknown pad_mode {pad_mode!r}; choose one of {', '.join(PAD_MODES)}")
        n_fft = whole_number(n_fft, "DiffSTFT: n_fft", minimum=4, unit=" samples")
        numbers_given = all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (win_length, hop_length)
        )
        if not numbers_given or not 0 < win_length <= n_fft or not 1 <= hop_length < math.inf:
            raise UsageError(
                "DiffSTFT: need 0 < win_length <= n_fft and a finite hop_length >= 1, "
                f"got {win_length!r}, {hop_length!r}"
            )
        if time_varying:
            what = "DiffSTFT: with time_varying=True, max_frames (the number of per-frame parameters)"
            whole_number(max_frames, what)
        self.n_fft = int(n_fft)
        self.window = window
        self.time_varying = bool(time_varying)
        self.pad_mode = pad_mode
        shape = (int(max_frames),) if time_varying else ()
        self.win_length = nn.Parameter(torch.full(shape, float(win_length)), requires_grad=learnable)
        self.hop_length = nn.Parameter(torch.full(shape, float(hop_length)), requires_grad=learnable)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def lengths(self) -> torch.Tensor:
        """Window lengths in use (samples), clamped to ``[2, n_fft]``: scalar or ``(max_frames,)``.

        A parameter outside the range still gets the gradient that brings it back (see
        :class:`InwardClamp`)."""
        return InwardClamp.apply(self.win_length, 2.0, float(self.n_fft))

    def hops(self) -> torch.Tensor:
        """Hops in use (samples), clamped to ``>= 1``: scalar or ``(max_frames,)``; a hop below 1 still
        gets the gradient that brings it back (see :class:`InwardClamp`)."""
        return InwardClamp.apply(self.hop_length, 1.0, math.inf)

    def centres(self, length: int) -> torch.Tensor:
        """Frame centres ``c_k <= length`` (``c_k < length`` for an odd ``n_fft``; samples,
        differentiable): float64 ``(frames,)``.

        Float64 whatever the parameters' dtype: in float32 a centre past ~10^6 samples (a minute at
        16 kHz) is off by up to 1/32 sample, and past 2^24 samples its fraction is lost altogether."""
        hops = self.hops().double()
        odd = self.n_fft % 2
        if not self.time_varying:
            hop = float(hops.detach())
            n_frames = math.ceil(length / hop) if odd else 1 + math.floor(length / hop)
            return torch.arange(n_frames, dtype=hops.dtype, device=hops.device) * hops
        centres = torch.cat([hops.new_zeros(1), torch.cumsum(hops, 0)[:-1]])
        inside = centres.detach() < length if odd else centres.detach() <= length
        n_frames = int(inside.sum())
        following = float(centres[-1].detach() + hops[-1].detach())
        if n_frames == centres.numel() and (following < length if odd else following <= length):
            raise UsageError(
                f"DiffSTFT: an input of {length} samples needs more than max_frames={centres.numel()} frames"
            )
        return centres[:n_frames]

    def _frame_lengths(self, n_frames: int) -> torch.Tensor:
        lengths = self.lengths()
        return lengths[:n_frames] if self.time_varying else lengths.expand(n_frames)

    def frame_window(self) -> torch.Tensor:
        """The window ``(n_fft,)`` of a frame centred on a whole sample, ``w(m - n_fft // 2; L)``: what every
        frame applies with one integer hop (``torch.stft``'s window in :meth:`forward`'s fast path), for a
        causal streaming step to apply to frames it keeps itself; differentiable in ``win_length``.
        A time-varying module has one window per frame: :class:`~audiokit.errors.UsageError`."""
        if self.time_varying:
            raise UsageError(
                "DiffSTFT: a time-varying module has one window per frame, not one frame_window; "
                "build it with time_varying=False (or stream it with stream())"
            )
        u = torch.arange(self.n_fft, dtype=self.win_length.dtype, device=self.win_length.device)
        return continuous_window(self.window, u - self.n_fft // 2, self.lengths(), self.n_fft)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.n_fft // 2
        if self.pad_mode == "reflect" and x.shape[-1] <= pad:
            raise UsageError(
                f"DiffSTFT: reflect padding needs more than n_fft // 2 = {pad} samples, got {x.shape[-1]}; "
                "use pad_mode='constant' for short inputs"
            )
        return F.pad(x.unsqueeze(1), (pad, pad), mode=self.pad_mode).squeeze(1)

    def _is_fast(self) -> bool:
        if self.time_varying:
            return False
        hop = float(self.hops().detach())
        return hop == round(hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Complex spectrogram of real float ``(B, T)`` audio (float16 is computed in float32) ->
        ``(B, n_fft // 2 + 1, frames)``; other inputs raise :class:`~audiokit.errors.UsageError`."""
        x = _fft_dtype(batch_audio(x, "DiffSTFT"))
        if self.pad_mode == "reflect" and x.shape[-1] <= self.n_fft // 2:
            self._pad(x)  # raises the explanatory error
        if self._is_fast() and x.shape[-1] + 2 * (self.n_fft // 2) >= self.n_fft:  # >= 1 frame
            return self._forward_fast(x)
        centres = self.centres(x.shape[-1])
        return analyse(self._pad(x), self.n_fft // 2, centres, self._frame_lengths(len(centres)), self)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        n, hop_t = self.n_fft, self.hops()
        hop = int(round(float(hop_t.detach())))
        u = torch.arange(n, dtype=x.dtype, device=x.device) - n // 2
        length = self.lengths().to(x.dtype)
        window = continuous_window(self.window, u, length, n)
        spec = torch.stft(x, n, hop, n, window, center=True, pad_mode=self.pad_mode, return_complex=True)
        if not (hop_t.requires_grad and torch.is_grad_enabled()):
            return spec
        with torch.no_grad():
            u_grad = u.clone().requires_grad_()
            with torch.enable_grad():
                dwin = torch.autograd.grad(
                    continuous_window(self.window, u_grad, length.detach(), n).sum(), u_grad
                )[0]
            d_frame = torch.stft(x, n, hop, n, dwin, center=True, pad_mode=self.pad_mode, return_complex=True)
            omega = 2j * math.pi * torch.arange(self.n_freqs, dtype=x.dtype, device=x.device) / n
            d_centre = omega[:, None] * spec - d_frame
        centres = torch.arange(spec.shape[-1], dtype=hop_t.dtype, device=x.device) * hop_t
        offset = (centres - centres.detach()).to(x.dtype)
        return spec + offset * d_centre

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Weighted overlap-add inverse: complex ``(B, n_fft // 2 + 1, frames)`` -> real ``(B, length)``.

        Each frame is inverse-transformed, multiplied by its window again and overlap-added; the
        sum is divided by the overlap-added squared windows (samples where that sum is below 1e-8
        of its peak are set to zero). Exact for unmodified spectra wherever the windows cover.
        """
        n, pad = self.n_fft, self.n_fft // 2
        if not spec.is_complex() or spec.dim() != 3 or spec.shape[1] != self.n_freqs:
            raise UsageError(
                f"DiffSTFT.inverse: expected a complex (batch, {self.n_freqs}, frames) spectrogram, "
                f"got {str(spec.dtype).removeprefix('torch.')} of shape {tuple(spec.shape)}"
            )
        centres = self.centres(length)
        if spec.shape[-1] != len(centres):
            raise UsageError(
                f"DiffSTFT.inverse: got {spec.shape[-1]} frames, expected {len(centres)} for {length} samples"
            )
        base = centres.detach().floor()
        frac = (centres - base).to(spec.real.dtype)
        m = torch.arange(n, device=spec.device)
        window = continuous_window(
            self.window,
            (m - pad).to(frac.dtype)[None, :] - frac[:, None],
            self._frame_lengths(len(centres))[:, None],
            n,
        )
        freqs = torch.arange(self.n_freqs, device=spec.device, dtype=frac.dtype)
        unphase = torch.exp(-2j * math.pi * freqs[:, None] * frac[None, :] / n)
        frames = torch.fft.irfft((spec * unphase).transpose(1, 2), n=n, dim=-1) * window  # (B, K, N)
        index = (base.long()[:, None] + m[None, :]).reshape(-1)  # into the padded signal
        size = length + 2 * pad
        keep = (index >= 0) & (index < size)
        out = frames.new_zeros(frames.shape[0], size).index_add(1, index[keep], frames.flatten(1)[:, keep])
        norm = window.new_zeros(size).index_add(0, index[keep], (window**2).flatten()[keep])
        norm = torch.where(norm > 1e-8 * norm.max(), norm, torch.full_like(norm, math.inf))
        return (out / norm)[:, pad : pad + length]

    def stream(self, batch_size: int) -> DiffSTFTStream:
        """Frame-by-frame session whose frames equal ``forward`` on the whole input."""
        return DiffSTFTStream(self, batch_size)


def _fft_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 unless it is float32 or float64 (the FFT's types)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def analyse(
    padded: torch.Tensor, origin: int, centres: torch.Tensor, lengths: torch.Tensor, stft: DiffSTFT
) -> torch.Tensor:
    """Frames of ``padded`` ``(B, P)`` centred at ``centres`` ``(K,)`` (samples of the unpadded input,
    which starts at ``padded[:, origin]``), windows of ``lengths`` ``(K,)`` -> complex ``(B, F, K)``."""
    n = stft.n_fft
    if len(centres) == 0:
        dtype = torch.promote_types(padded.dtype, torch.complex64)
        return torch.zeros(padded.shape[0], stft.n_freqs, 0, dtype=dtype, device=padded.device)
    base = centres.detach().floor()
    frac = (centres - base).to(padded.dtype)
    m = torch.arange(n, device=padded.device)
    index = (base.long() - n // 2 + origin)[:, None] + m[None, :]  # (K, N)
    u = (m - n // 2).to(padded.dtype)[None, :] - frac[:, None]
    window = continuous_window(stft.window, u, lengths.to(padded.dtype)[:, None], n)
    spec = torch.fft.rfft(padded[:, index] * window, dim=-1)  # (B, K, F)
    freqs = torch.arange(stft.n_freqs, device=padded.device, dtype=padded.dtype)
    phase = torch.exp(2j * math.pi * frac[:, None] * freqs[None, :] / n)
    return (spec * phase).transpose(1, 2)


class DiffSTFTStream:
    """Streaming session of a ``DiffSTFT``: ``push`` any chunk length, ``flush`` at the end.

    Frame ``k`` is emitted as soon as every input sample it reads has arrived (``N // 2`` samples
    of look-ahead, as ``center=True`` implies); the right-edge padding is applied by ``flush``, which
    ends the stream (a later ``push`` raises :class:`~audiokit.errors.UsageError`). Memory is bounded
    by about ``n_fft`` samples per stream. Uses the module's current parameters.
    """

    def __init__(self, stft: DiffSTFT, batch_size: int) -> None:
        self.stft = stft
        self.batch_size = whole_number(batch_size, "DiffSTFT.stream: batch_size")
        self._raw = torch.zeros(batch_size, 0)  # samples before the left padding is known
        self._buf: torch.Tensor | None = None  # padded signal from index _buf_start (padded coordinates)
        self._buf_start = 0
        self._received = 0
        self._next = 0
        self._flushed = False

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add real float ``(B, t)`` samples; returns the newly complete frames ``(B, F, k)``."""
        chunk = _fft_dtype(batch_audio(chunk, "DiffSTFTStream.push", self.batch_size))
        if self._flushed:
            raise UsageError(
                "DiffSTFTStream: push after flush; the stream has ended, start a new one with stream()"
            )
        self._received += chunk.shape[-1]
        pad = self.stft.n_fft // 2
        if self._buf is None:
            self._raw = torch.cat([self._raw.to(chunk), chunk], dim=-1)
            if self._received <= pad:
                return self._empty(chunk)
            left = self._raw[:, 1 : pad + 1].flip(-1)
            if self.stft.pad_mode == "constant":
                left = torch.zeros_like(left)
            self._buf, self._raw = torch.cat([left, self._raw], dim=-1), self._raw[:, :0]
        else:
            self._buf = torch.cat([self._buf, chunk], dim=-1)
        return self._emit(available=self._received + pad)

    def flush(self) -> torch.Tensor:
        """Frames that need the right-edge padding; the session is finished afterwards."""
        pad, length = self.stft.n_fft // 2, self._received
        if self._buf is None:
            full = self.stft._pad(self._raw)
            self._buf, self._buf_start = full, 0
        else:
            right = F.pad(self._buf[:, None, -(pad + 1) :], (0, pad), mode=self.stft.pad_mode)[
                :, 0, pad + 1 :
            ]
            self._buf = torch.cat([self._buf, right], dim=-1)
        self._flushed = True  # the buffer now ends in padding
        return self._emit(available=length + 2 * pad, length=length)

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(
            self.batch_size, self.stft.n_freqs, 0, dtype=torch.promote_types(like.dtype, torch.complex64)
        )

    def _emit(self, available: int, length: int | None = None) -> torch.Tensor:
        stft, n, pad = self.stft, self.stft.n_fft, self.stft.n_fft // 2
        centres = stft.centres(self._received if length is None else length)
        if length is None:  # only frames whose last sample (padded index floor(c) + n - 1) has arrived
            ready = int((centres.detach().floor() + n - 1 < available).sum())
        else:
            ready = len(centres)
        todo = centres[self._next : ready]
        out = analyse(self._buf, pad - self._buf_start, todo, stft._frame_lengths(ready)[self._next :], stft)
        self._next = ready
        if length is None:  # keep from the next frame's start, and the last pad + 1 samples for flush
            keep_from = min(self._next_start(ready), available - pad - 1)
            drop = max(0, keep_from - self._buf_start)
            self._buf, self._buf_start = self._buf[:, drop:], self._buf_start + drop
        return out

    def _next_start(self, k: int) -> int:
        """Padded index of the first sample frame ``k`` reads (a large number if there is no frame ``k``)."""
        hops = self.stft.hops().detach().double()
        if not self.stft.time_varying:
            return int(math.floor(k * float(hops)))
        if k >= hops.numel():
            return 2**62
        # the same float64 sum as DiffSTFT.centres, so that the floors agree
        return int(math.floor(float(torch.cumsum(hops, 0)[k - 1]))) if k else 0
