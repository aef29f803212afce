"""Adaptive filterbank front end: K learnable FIR banks mixed per input or per segment by a small
content analyser; causal and streamable.

Pipeline for ``(B, T)`` audio at ``sample_rate`` (frame ``j`` ends at sample ``(j + 1) * hop - 1``):

1. each bank ``k``: complex FIR (``filter_length`` taps, causal), output evaluated every
   ``energy_stride`` samples -> ``|y|^2`` -> Hann-weighted mean over the last ``2 * hop`` samples,
   every ``hop`` -> band energies ``E_k`` ``(B, n_bands, T // hop)``;
2. analyser: log power spectrum of the last ``2 * hop`` samples of each frame -> MLP -> ``K`` logits;
   ``mixing="input"`` averages the logits over the whole input (offline only), ``mixing="segment"``
   gives segment ``s`` (``segment_frames`` frames) the mean logits of segment ``s - 1`` (segment 0: a
   learned prior), so decisions are causal;
3. weights ``softmax(logits / temperature)`` while training (soft mixing); in eval mode with
   ``hard=True`` the argmax bank alone (one-hot); energies ``sum_k w_k E_k``;
4. compression: ``log`` (``log(E + 1e-6)``), ``pcen`` (per-band learnable PCEN, causal smoother) or ``none``.

Streaming (``mixing="segment"``): the module is a :class:`~audiokit.nn.streaming.StreamingModule`;
:meth:`AdaptiveFilterbank.step` takes whole hops and carries an :class:`AdaptiveFilterbankState` (the
last ``history`` samples, the frames seen, the segment sums, the PCEN smoother; zeros for a new stream,
so rows restart with :func:`~audiokit.nn.state.zero_rows`), and ``forward`` is the step from a new
stream's state over the whole input. :class:`AdaptiveFilterbankStream` takes chunks of any length.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.frontends.diffstft import batch_audio
from audiokit.frontends.filterbank import INITS, FIRFilterbank
from audiokit.nn.state import StreamState
from audiokit.nn.streaming import StreamingModule

COMPRESSIONS = ("log", "pcen", "none")
MIXINGS = ("input", "segment")
_PCEN_CHUNK = 64


def _whole(**values: object) -> list[int]:
    """``values`` as ints (any integer type); :class:`~audiokit.errors.UsageError` naming the first that
    is not a whole number >= 1."""
    return [whole_number(value, f"AdaptiveFilterbank: {name}") for name, value in values.items()]


class PCEN(nn.Module):
    """Per-channel energy normalisation with learnable per-band ``alpha, delta, r, s`` (positive).

    ``M[t] = (1 - s) M[t-1] + s E[t]`` with ``M[-1] = E[0]``;
    ``out = (E / (eps + M)^alpha + delta)^r - delta^r``. Input/output ``(B, n_bands, frames)``.
    """

    def __init__(
        self, n_bands: int, alpha: float = 0.96, delta: float = 2.0, r: float = 0.5, s: float = 0.04
    ):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n_bands,), math.log(alpha)))
        self.log_delta = nn.Parameter(torch.full((n_bands,), math.log(delta)))
        self.log_r = nn.Parameter(torch.full((n_bands,), math.log(r)))
        self.logit_s = nn.Parameter(torch.full((n_bands,), math.log(s / (1 - s))))
        self.eps = 1e-6

    def smooth(self, energy: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal smoother ``M`` of ``energy`` ``(B, n_bands, frames)`` from ``state`` ``(B, n_bands)``.

        Exact closed form per chunk: ``M[i] = a^(i+1) M[-1] + s sum_{j<=i} a^(i-j) E[j]``, ``a = 1 - s``.
        """
        s = torch.sigmoid(self.logit_s)
        a = 1 - s
        state = energy[..., 0] if state is None else state
        steps = torch.arange(_PCEN_CHUNK, device=energy.device, dtype=energy.dtype)
        lag = steps[:, None] - steps[None, :]
        decay = torch.where(
            lag >= 0, a[:, None, None] ** lag.clamp_min(0), torch.zeros_like(a[:, None, None])
        )
        out = []
        for chunk in energy.split(_PCEN_CHUNK, dim=-1):
            n = chunk.shape[-1]
            smoothed = s[:, None] * torch.einsum("mij,bmj->bmi", decay[:, :n, :n], chunk)
            smoothed = smoothed + a[:, None] ** (steps[:n] + 1) * state[..., None]
            out.append(smoothed)
            state = smoothed[..., -1]
        return torch.cat(out, dim=-1), state

    def forward(
        self, energy: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        smoothed, state = self.smooth(energy, state)
        alpha, delta, r = (p.exp()[:, None] for p in (self.log_alpha, self.log_delta, self.log_r))
        out = (energy / (self.eps + smoothed) ** alpha + delta) ** r - delta**r
        return out, state


@dataclass
class AdaptiveFilterbankState(StreamState):
    """Streaming state of an :class:`AdaptiveFilterbank`, zeros for a new stream: the last ``history``
    input samples ``(B, history)``, the frames seen ``(B, 1)`` (float64), the previous segment's mean
    analyser logits ``(B, K)`` (read from the second segment on), the sum of the current segment's
    ``(B, K)``, and the PCEN smoother ``(B, n_bands)`` (``(B, 0)`` without PCEN; read from the second
    frame on: a stream's first frame starts it)."""

    history: torch.Tensor
    frames: torch.Tensor
    previous: torch.Tensor
    total: torch.Tensor
    smoother: torch.Tensor


class AdaptiveFilterbank(nn.Module, StreamingModule):
    """K learnable FIR filterbanks mixed by a content analyser: ``(B, T)`` -> ``(B, n_bands, T // hop)``.

    A :class:`~audiokit.nn.streaming.StreamingModule` (``mixing="segment"``): :meth:`init_state` and
    :meth:`step` on whole hops; ``forward`` is the step from a new stream's state over the whole input.
    """

    rounds_weights = False  # the FIR taps stay as trained in a model set to float16 or int8 weights

    def __init__(
        self,
        sample_rate: int,
        n_bands: int = 64,
        hop_length: int | None = None,
        filter_length: int | None = None,
        banks: Sequence[str] = ("mel", "erb", "linear", "gabor"),
        mixing: str = "segment",
        segment_frames: int = 50,
        compression: str = "log",
        hard: bool = True,
        energy_stride: int | None = None,
        temperature: float = 1.0,
        analyser_hidden: int = 32,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        sample_rate, n_bands, segment_frames = _whole(
            sample_rate=sample_rate, n_bands=n_bands, segment_frames=segment_frames
        )
        (analyser_hidden,) = _whole(analyser_hidden=analyser_hidden)
        (hop_length,) = _whole(hop_length=sample_rate // 100 if hop_length is None else hop_length)
        filter_length = 4 * hop_length + 1 if filter_length is None else filter_length
        energy_stride = max(1, hop_length // 4) if energy_stride is None else energy_stride
        filter_length, energy_stride = _whole(filter_length=filter_length, energy_stride=energy_stride)
        if not (isinstance(temperature, numbers.Real) and 0 < temperature < math.inf):
            raise UsageError(f"AdaptiveFilterbank: temperature must be a number > 0, got {temperature!r}")
        f_top = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_top <= sample_rate / 2:
            raise UsageError(
                f"AdaptiveFilterbank: need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2:g} Hz, "
                f"got f_min={f_min}, f_max={f_max}"
            )
        if hop_length % energy_stride:
            raise UsageError(
                f"AdaptiveFilterbank: energy_stride {energy_stride} must divide hop_length {hop_length}"
            )
        if filter_length < energy_stride:  # the history would not hold the analyser's 2 * hop samples
            raise UsageError(
                f"AdaptiveFilterbank: filter_length {filter_length} is shorter than energy_stride "
                f"{energy_stride} (samples); give a smaller energy_stride (a divisor of hop_length "
                f"{hop_length}) for shorter filters"
            )
        for name, value, allowed in (("mixing", mixing, MIXINGS), ("compression", compression, COMPRESSIONS)):
            if value not in allowed:
                raise UsageError(
                    f"AdaptiveFilterbank: unknown {name} {value!r}; choose one of {', '.join(allowed)}"
                )
        if not banks or any(b not in INITS for b in banks):
            raise UsageError(
                f"AdaptiveFilterbank: banks must be a non-empty list of {', '.join(INITS)}, got {banks}"
            )
        self.sample_rate, self.n_bands, self.hop_length = sample_rate, n_bands, hop_length
        self.filter_length, self.mixing, self.segment_frames = filter_length, mixing, segment_frames
        self.compression, self.hard, self.temperature = compression, hard, temperature
        self.n_features = n_bands
        self.banks = nn.ModuleList(
            FIRFilterbank(sample_rate, n_bands, filter_length, b, f_min, f_max) for b in banks
        )
        self.energy_stride, self.pool_length = energy_stride, 2 * hop_length
        pool = torch.hann_window(self.pool_length // energy_stride + 2, periodic=False)[1:-1]
        self.register_buffer("pool", pool / pool.sum(), persistent=False)
        self.register_buffer("analysis_window", torch.hann_window(self.pool_length), persistent=False)
        self.analyser = nn.Sequential(
            nn.Linear(self.pool_length // 2 + 1, analyser_hidden),
            nn.ReLU(),
            nn.Linear(analyser_hidden, len(banks)),
        )
        self.prior = nn.Parameter(torch.zeros(len(banks)))
        self.pcen = PCEN(n_bands) if compression == "pcen" else None

    @property
    def history(self) -> int:
        """Samples of past context each frame reads beyond its own hop."""
        return self.filter_length - self.energy_stride + self.pool_length - self.hop_length

    def prepare_weights(self) -> torch.Tensor:
        """The banks' taps as one matrix ``(2 * K * n_bands, filter_length)``: real parts, then imaginary
        parts, time reversed (the matrix times a window of samples is the filters' output at its end)."""
        taps = torch.cat([bank.taps() for bank in self.banks]).flip(-1)
        return torch.cat([taps.real, taps.imag])

    def energies(self, padded: torch.Tensor) -> torch.Tensor:
        """Band energies of every bank ``(B, K, n_bands, frames)`` from audio with ``history`` samples of
        left context (``(B, history + frames * hop)``).

        With autograd recording (training) the filters and the pooling are strided convolutions, whose
        backward is about twice as fast on training batches; otherwise (inference, streaming steps) they
        are products of the windows of samples (frames) by the taps (pooling window), about 3x as fast
        for a hop. The two round differently by ~1e-7."""
        weights, stride = self.current_weights(), self.hop_length // self.energy_stride
        if torch.is_grad_enabled():
            y = F.conv1d(padded[:, None], weights[:, None], stride=self.energy_stride)  # (B, 2KM, samples)
            half = y.shape[1] // 2
            power = y[:, :half] ** 2 + y[:, half:] ** 2
            b, c, t = power.shape
            pooled = F.conv1d(power.reshape(b * c, 1, t), self.pool[None, None], stride=stride)
        else:
            y = padded.unfold(-1, self.filter_length, self.energy_stride) @ weights.t()  # (B, samples, 2KM)
            half = y.shape[-1] // 2
            power = y[..., :half] ** 2 + y[..., half:] ** 2
            pooled = (power.unfold(1, self.pool.shape[0], stride) @ self.pool).transpose(1, 2)
        return pooled.reshape(padded.shape[0], len(self.banks), self.n_bands, -1)

    def logits(self, padded: torch.Tensor) -> torch.Tensor:
        """Analyser logits ``(B, frames, K)`` from the same padded audio as ``energies``."""
        start = self.history + self.hop_length - self.pool_length
        frames = padded[:, start:].unfold(-1, self.pool_length, self.hop_length)
        spectrum = torch.fft.rfft(frames * self.analysis_window, dim=-1).abs() ** 2
        return self.analyser(torch.log(spectrum + 1e-8))

    def _input_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """Mixing weights ``(B, frames, K)`` for ``mixing="input"``: one decision for the whole input."""
        return self._normalise(logits.mean(dim=1, keepdim=True).expand_as(logits))

    def _normalise(self, logits: torch.Tensor) -> torch.Tensor:
        if self.hard and not self.training:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return torch.softmax(logits / self.temperature, dim=-1)

    def _segment_logits(self, logits: torch.Tensor, state: AdaptiveFilterbankState) -> torch.Tensor:
        """Decision logits ``(B, k, K)`` for ``mixing="segment"`` of the frames after those ``state`` has
        seen, whose analyser logits are ``logits (B, k, K)``: the prior in segment 0, the mean logits of
        segment ``s - 1`` in segment ``s``. Updates the state's segment sums (not its frame count). Rows
        may be at different frames (streams reset at different times); the sums are added frame by frame
        in order, so any chunking gives the same decisions."""
        size, frames = self.segment_frames, logits.shape[1]
        if not frames:
            return logits
        position = state.frames + torch.arange(frames, device=logits.device)  # (B, k)
        ended = ((position % size == 0) & (position > 0))[..., None]  # a segment ended before the frame
        previous, total, decisions = state.previous, state.total, []
        for j in range(frames):
            previous = torch.where(ended[:, j], total / size, previous)
            total = torch.where(ended[:, j], 0.0, total)
            decisions.append(previous)
            total = total + logits[:, j]
        state.previous, state.total = previous, total
        return torch.where((position < size)[..., None], self.prior, torch.stack(decisions, 1))

    def _zero_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> AdaptiveFilterbankState:
        def zeros(*shape: int, kind: torch.dtype = dtype) -> torch.Tensor:
            return torch.zeros(batch_size, *shape, device=device, dtype=kind)

        banks, smoothed = len(self.banks), self.n_bands if self.pcen is not None else 0
        return AdaptiveFilterbankState(
            zeros(self.history), zeros(1, kind=torch.float64), zeros(banks), zeros(banks), zeros(smoothed)
        )

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> AdaptiveFilterbankState:
        """The state of ``batch_size`` new streams (zeros; :class:`AdaptiveFilterbankState`), on the
        module's device and in its dtype unless given; prepares the banks' taps for the steps."""
        self.prepare()
        device = self.prior.device if device is None else device
        return self._zero_state(batch_size, device, self.prior.dtype if dtype is None else dtype)

    def step(self, x: torch.Tensor, state: AdaptiveFilterbankState, final: bool = False) -> torch.Tensor:
        """Features ``(B, n_bands, k)`` of the frames that end in the next ``x (B, k * hop_length)``
        samples; updates ``state``. ``mixing="segment"`` only (:class:`~audiokit.errors.UsageError`
        otherwise: ``"input"`` decides once per whole input)."""
        if self.mixing != "segment":
            raise UsageError(
                "AdaptiveFilterbank: mixing='input' looks at the whole input; stream with 'segment'"
            )
        if x.shape[-1] % self.hop_length:
            raise ValueError(
                f"a chunk of {x.shape[-1]} samples is not a multiple of the hop {self.hop_length}"
            )
        if not x.shape[-1]:  # no new samples: no frames, the state stays
            return x.new_zeros(x.shape[0], self.n_bands, 0)
        padded = torch.cat([state.history, x], -1)
        state.history = padded[:, padded.shape[-1] - self.history :]
        return self._features(padded, state)

    def _features(self, padded: torch.Tensor, state: AdaptiveFilterbankState) -> torch.Tensor:
        """Features ``(B, n_bands, frames)`` of ``padded (B, history + frames * hop)`` (the state's
        history, then the new samples), continuing from ``state``'s segment sums and PCEN smoother and
        updating them."""
        energy = self.energies(padded)
        logits = self.logits(padded)
        if self.mixing == "input":
            weight = self._input_weights(logits)
        else:
            weight = self._normalise(self._segment_logits(logits, state))
        mixed = torch.einsum("bkmt,btk->bmt", energy, weight)
        started = state.frames > 0  # (B, 1): the smoother holds a frame
        state.frames = state.frames + mixed.shape[-1]
        if self.compression == "log":
            return torch.log(mixed + 1e-6)
        if self.compression == "pcen":  # a new stream's smoother starts at its first frame
            out, state.smoother = self.pcen(mixed, torch.where(started, state.smoother, mixed[..., 0]))
            return out
        return mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real float ``(B, T)`` audio (converted to the module's dtype) -> ``(B, n_bands, T // hop_length)``
        features, the steps' from a new stream; other inputs raise :class:`~audiokit.errors.UsageError`."""
        x = batch_audio(x, "AdaptiveFilterbank").to(self.prior.dtype)
        usable = x.shape[-1] - x.shape[-1] % self.hop_length
        if not usable:  # no whole hop: no frame (the pooling needs one)
            return x.new_zeros(x.shape[0], self.n_bands, 0)
        padded = F.pad(x[:, :usable], (self.history, 0))
        return self._features(padded, self._zero_state(x.shape[0], x.device, x.dtype))

    def mixing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame bank weights ``(B, frames, K)`` the forward pass would use (for inspection)."""
        usable = x.shape[-1] - x.shape[-1] % self.hop_length
        if not usable:
            return x.new_zeros(x.shape[0], 0, len(self.banks))
        logits = self.logits(F.pad(x[:, :usable], (self.history, 0)))
        if self.mixing == "input":
            return self._input_weights(logits)
        state = self._zero_state(x.shape[0], x.device, x.dtype)
        return self._normalise(self._segment_logits(logits, state))

    def stream(self, batch_size: int) -> AdaptiveFilterbankStream:
        """Streaming session (``mixing="segment"`` only); frames equal ``forward`` on the whole input."""
        if self.mixing != "segment":
            raise UsageError(
                "AdaptiveFilterbank: mixing='input' looks at the whole input; stream with 'segment'"
            )
        return AdaptiveFilterbankStream(self, batch_size)


class AdaptiveFilterbankStream:
    """``push`` any chunk ``(B, t)`` -> new frames ``(B, n_bands, k)`` (:meth:`AdaptiveFilterbank.step` on
    the whole hops received); ``flush`` returns nothing new (frames are causal; a trailing partial hop is
    dropped, as offline). With autograd on, each push's frames have gradients within that push only: the
    carried state is detached, so memory stays bounded."""

    def __init__(self, module: AdaptiveFilterbank, batch_size: int) -> None:
        self.module = module
        self.batch_size = whole_number(batch_size, "AdaptiveFilterbank.stream: batch_size")
        self._state = module.init_state(batch_size)
        self._pending = torch.zeros(batch_size, 0, dtype=module.prior.dtype, device=module.prior.device)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add real float ``(B, t)`` samples; returns the newly complete frames ``(B, n_bands, k)``."""
        m = self.module
        chunk = batch_audio(chunk, "AdaptiveFilterbankStream.push", self.batch_size).to(m.prior.dtype)
        pending = torch.cat([self._pending, chunk], dim=-1)
        whole = pending.shape[-1] - pending.shape[-1] % m.hop_length
        self._pending = pending[:, whole:]
        out = m.step(pending[:, :whole], self._state)
        for field in dataclasses.fields(self._state):
            setattr(self._state, field.name, getattr(self._state, field.name).detach())
        return out

    def flush(self) -> torch.Tensor:
        return self._pending.new_zeros(self.batch_size, self.module.n_bands, 0)
