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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.frontends.diffstft import batch_audio
from audiokit.frontends.filterbank import INITS, FIRFilterbank

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


class AdaptiveFilterbank(nn.Module):
    """K learnable FIR filterbanks mixed by a content analyser: ``(B, T)`` -> ``(B, n_bands, T // hop)``."""

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

    def _conv_weight(self) -> torch.Tensor:
        taps = torch.cat([bank.taps() for bank in self.banks]).flip(
            -1
        )  # conv1d correlates: flip for convolution
        return torch.cat([taps.real, taps.imag])[:, None, :]  # (2 * K * M, 1, L)

    def energies(self, padded: torch.Tensor) -> torch.Tensor:
        """Band energies of every bank ``(B, K, n_bands, frames)`` from audio with ``history`` samples of
        left context (``(B, history + frames * hop)``)."""
        y = F.conv1d(padded[:, None], self._conv_weight(), stride=self.energy_stride)  # (B, 2KM, samples)
        half = y.shape[1] // 2
        power = y[:, :half] ** 2 + y[:, half:] ** 2
        b, c, t = power.shape
        stride = self.hop_length // self.energy_stride
        pooled = F.conv1d(power.reshape(b * c, 1, t), self.pool[None, None], stride=stride)
        return pooled.reshape(b, len(self.banks), self.n_bands, -1)

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

    def _segment_logits(
        self, logits: torch.Tensor, first_frame: int, state: tuple
    ) -> tuple[torch.Tensor, tuple]:
        """Per-frame decision logits for ``mixing="segment"`` and the updated ``(current, sum, count)``."""
        current, total, count = state
        out = []
        for j in range(logits.shape[1]):
            if (first_frame + j) % self.segment_frames == 0 and first_frame + j > 0:
                current, total, count = total / count, torch.zeros_like(total), 0
            out.append(current)
            total, count = total + logits[:, j], count + 1
        stacked = torch.stack(out, dim=1) if out else logits
        return stacked, (current, total, count)

    def initial_state(self, batch_size: int) -> dict:
        prior = self.prior.expand(batch_size, -1)
        return {"frame": 0, "segment": (prior, torch.zeros_like(prior), 0), "pcen": None}

    def features(self, padded: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Features ``(B, n_bands, frames)`` of left-padded audio, continuing from ``state``."""
        energy = self.energies(padded)
        logits = self.logits(padded)
        if self.mixing == "input":
            weight = self._input_weights(logits)
        else:
            decision, state["segment"] = self._segment_logits(logits, state["frame"], state["segment"])
            weight = self._normalise(decision)
        state["frame"] += energy.shape[-1]
        mixed = torch.einsum("bkmt,btk->bmt", energy, weight)
        if self.compression == "log":
            return torch.log(mixed + 1e-6), state
        if self.compression == "pcen" and mixed.shape[-1] > 0:
            out, state["pcen"] = self.pcen(mixed, state["pcen"])
            return out, state
        return mixed, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real float ``(B, T)`` audio (converted to the module's dtype) -> ``(B, n_bands, T // hop_length)``
        features; other inputs raise :class:`~audiokit.errors.UsageError`."""
        x = batch_audio(x, "AdaptiveFilterbank").to(self.prior.dtype)
        usable = x.shape[-1] - x.shape[-1] % self.hop_length
        if not usable:  # no whole hop: no frame (the pooling needs one)
            return x.new_zeros(x.shape[0], self.n_bands, 0)
        padded = F.pad(x[:, :usable], (self.history, 0))
        return self.features(padded, self.initial_state(x.shape[0]))[0]

    def mixing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame bank weights ``(B, frames, K)`` the forward pass would use (for inspection)."""
        usable = x.shape[-1] - x.shape[-1] % self.hop_length
        if not usable:
            return x.new_zeros(x.shape[0], 0, len(self.banks))
        padded = F.pad(x[:, :usable], (self.history, 0))
        logits = self.logits(padded)
        if self.mixing == "input":
            return self._input_weights(logits)
        return self._normalise(self._segment_logits(logits, 0, self.initial_state(x.shape[0])["segment"])[0])

    def stream(self, batch_size: int) -> AdaptiveFilterbankStream:
        """Streaming session (``mixing="segment"`` only); frames equal ``forward`` on the whole input."""
        if self.mixing != "segment":
            raise UsageError(
                "AdaptiveFilterbank: mixing='input' looks at the whole input; stream with 'segment'"
            )
        return AdaptiveFilterbankStream(self, batch_size)


class AdaptiveFilterbankStream:
    """``push`` any chunk ``(B, t)`` -> new frames ``(B, n_bands, k)``; ``flush`` returns nothing new
    (frames are causal; a trailing partial hop is dropped, as offline). With autograd on, each push's
    frames have gradients within that push only: the carried state is detached, so memory stays bounded."""

    def __init__(self, module: AdaptiveFilterbank, batch_size: int) -> None:
        self.module = module
        self.batch_size = whole_number(batch_size, "AdaptiveFilterbank.stream: batch_size")
        self._buf = torch.zeros(batch_size, module.history)
        self._state = module.initial_state(batch_size)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add real float ``(B, t)`` samples; returns the newly complete frames ``(B, n_bands, k)``."""
        m = self.module
        chunk = batch_audio(chunk, "AdaptiveFilterbankStream.push", self.batch_size).to(m.prior.dtype)
        self._buf = torch.cat([self._buf.to(chunk), chunk], dim=-1)
        n_frames = (self._buf.shape[-1] - m.history) // m.hop_length
        if n_frames == 0:
            return chunk.new_zeros(self.batch_size, m.n_bands, 0)
        used = m.history + n_frames * m.hop_length
        out, self._state = m.features(self._buf[:, :used], self._state)
        current, total, count = self._state["segment"]
        self._state["segment"] = (current.detach(), total.detach(), count)
        if self._state["pcen"] is not None:
            self._state["pcen"] = self._state["pcen"].detach()
        self._buf = self._buf[:, used - m.history :]
        return out

    def flush(self) -> torch.Tensor:
        return self._buf.new_zeros(self.batch_size, self.module.n_bands, 0)
