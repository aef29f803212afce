"""Streaming bandwidth extension: keep the band the input has, add the band it lacks.

Signal path (``bwe-8to16``: 16 kHz out, causal STFT of 256 samples at a 128-sample hop):
1. 8 kHz input is upsampled by the fixed FIR of :class:`~audiokit.nn.resample.Upsampler` (16 kHz
   input whose content stops early needs nothing); the band edge ``edge_hz`` (per item) says where
   real content stops (:func:`band_edge`: the input's Nyquist for 8 kHz input, else
   :func:`audiokit.dsp.estimate_bandwidth`);
2. features of the band below the edge only: log power in ERB bands, the compressed complex
   spectrum, and the edge itself;
3. a linear map, a causal depthwise conv over frames, LSTM layers;
4. excitation by spectral translation (SBR's idea): the top of the known band, ``W`` bins wide with
   ``W`` even (so translated phases stay coherent from frame to frame at half-frame hops), is copied
   up until the top; the network gives it a per-ERB-band gain and adds a complex residual scaled by
   the frame's level (so silence stays silent);
5. ``Y = X`` below ``edge - crossfade``, the new band above ``edge``, a linear crossfade between:
   the model only adds the missing band. Input that is already wideband (edge at Nyquist) passes
   through unchanged (up to the STFT's float rounding).

Algorithmic latency: the FIR's delay (8 kHz input) plus ``n_fft`` samples, rounded up to whole 8 kHz
samples (bwe-8to16: 63 + 256 -> 320, 20 ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.dsp import erb_filterbank, estimate_bandwidth
from audiokit.errors import UsageError
from audiokit.models.base import ANY_AUDIO_SHAPE, AudioModel, ModelConfig, real_number
from audiokit.nn import StreamableConv1d, StreamableLSTM
from audiokit.nn.resample import DEFAULT_CUTOFF, Upsampler
from audiokit.nn.spectral import CausalInverseSpectrum, CausalSpectrum
from audiokit.nn.state import StateList
from audiokit.nn.streaming import StreamingModule
from audiokit.streaming.audio import AudioStream
from audiokit.streaming.upsampled import UpsampledStream

# 8 kHz input's band edge: its Nyquist, up to which the upsampler keeps real content (3800 Hz until
# session 16 replaced the input's real 3.5-3.9 kHz with made content, at a cost in STOI and PESQ)
NARROWBAND_EDGE_HZ = 4000.0
WIDEBAND_FRACTION = 0.97  # an edge this close to Nyquist means wideband input: passed through


@dataclass
class BandwidthExtenderConfig(ModelConfig):
    """Architecture of a :class:`BandwidthExtender` (mono, output at ``sample_rate``)."""

    n_fft: int = 256
    hop_length: int = 128
    erb_bands: int = 32
    compression: float = 0.3
    hidden_dim: int = 128
    conv_kernel: int = 3
    lstm_layers: int = 2
    crossfade_bins: int = 4
    upsample_taps_per_phase: int = 32
    upsample_cutoff: float = DEFAULT_CUTOFF  # the FIR's passband edge, a fraction of the input's Nyquist

    def __post_init__(self) -> None:
        if self.channels != 1:
            raise ValueError(f"a bandwidth extender is mono, got channels={self.channels}")
        if self.n_fft != 2 * self.hop_length:
            raise ValueError("n_fft must be twice hop_length (sqrt-Hann overlap-add)")


CONFIGS: dict[str, BandwidthExtenderConfig] = {
    # 8 kHz (or band-limited 16 kHz) speech -> 16 kHz; 16 ms STFT + 3.9 ms FIR latency (a FIR sharp
    # enough to keep the input's band to ~3.7 kHz, docs/training.md session 17)
    "bwe-8to16": BandwidthExtenderConfig(
        name="bwe-8to16", sample_rate=16000, upsample_taps_per_phase=64, upsample_cutoff=0.97
    ),
}


def band_edge(wav: torch.Tensor, input_rate: int, output_rate: int) -> float:
    """Where real content of ``wav (C, T)`` at ``input_rate`` stops, in Hz, capped below Nyquist."""
    if input_rate * 2 == output_rate:
        return NARROWBAND_EDGE_HZ
    return edge_of_bandwidth(estimate_bandwidth(wav, input_rate), input_rate, output_rate)


def edge_of_bandwidth(measured_hz: float, input_rate: int, output_rate: int) -> float:
    """The band edge (Hz) of input at ``input_rate`` whose measured bandwidth is ``measured_hz``
    (:func:`audiokit.dsp.estimate_bandwidth`; 0: no content, so the input's Nyquist), capped at the
    output's Nyquist."""
    return float(min(measured_hz if measured_hz > 0 else input_rate / 2, output_rate / 2))


class BandwidthExtender(
    AudioModel, StreamingModule, family="bwe", config_class=BandwidthExtenderConfig, configs=CONFIGS
):
    """Bandwidth extension to ``config.sample_rate``: ``(B, C, T) -> (B, C, T)`` at that rate.

    :meth:`forward` takes input already at the output rate plus its band edge; :meth:`extend` takes
    8 kHz or band-limited 16 kHz input and finds the edge.
    """

    config: BandwidthExtenderConfig

    def __init__(self, config: BandwidthExtenderConfig) -> None:
        super().__init__(config)
        c = config
        bins = c.n_fft // 2 + 1
        self.analysis = CausalSpectrum(c.n_fft, c.hop_length)
        self.synthesis = CausalInverseSpectrum(c.n_fft, c.hop_length)
        self.upsampler = Upsampler(2, taps_per_phase=c.upsample_taps_per_phase, cutoff=c.upsample_cutoff)
        bands = erb_filterbank(c.sample_rate, c.n_fft, c.erb_bands)
        self.register_buffer("erb", bands, persistent=False)
        spread = bands.t() / bands.t().sum(1, keepdim=True).clamp_min(1e-8)
        self.register_buffer("erb_spread", spread, persistent=False)
        self.input_proj = nn.Linear(c.erb_bands + 2 * bins + 1, c.hidden_dim)
        self.frame_conv = StreamableConv1d(
            c.hidden_dim, c.hidden_dim, c.conv_kernel, groups=c.hidden_dim, causal=True, norm="none"
        )
        self.lstm = StreamableLSTM(c.hidden_dim, c.lstm_layers, skip=True, fast_steps=True)
        self.gain_head = nn.Linear(c.hidden_dim, c.erb_bands)
        self.residual_head = nn.Linear(c.hidden_dim, 2 * bins)
        nn.init.zeros_(self.gain_head.weight)
        nn.init.constant_(self.gain_head.bias, math.log(0.3))  # start with a quiet copy of the top band
        nn.init.normal_(self.residual_head.weight, std=1e-3)
        nn.init.zeros_(self.residual_head.bias)

    # -- interface -------------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def algorithmic_latency(self) -> int:
        """Samples at the output rate for 8 kHz input: the FIR's delay plus ``n_fft``, rounded up to whole
        input samples (each arrives as ``upsampler.factor`` output samples)."""
        factor = self.upsampler.factor
        return -(-(self.upsampler.delay + self.config.n_fft) // factor) * factor

    @property
    def output_lag(self) -> int:
        """Samples by which :meth:`step`'s output lags its (output-rate) input."""
        return self.synthesis.delay

    def step_options(self, edge_hz: float | None = None) -> dict[str, float]:
        """:meth:`step`'s keyword arguments: ``edge_hz`` (required, :func:`check_edge_hz`)."""
        if edge_hz is None:
            raise UsageError(
                "a session of input at the output rate needs edge_hz: the frequency (Hz) where the input's "
                "content stops (audiokit.dsp.estimate_bandwidth measures it); for 8 kHz input pass "
                "input_rate=8000 instead"
            )
        return {"edge_hz": check_edge_hz(edge_hz, self.sample_rate)}

    def stream(
        self, batch_size: int = 1, input_rate: int | None = None, **options: Any
    ) -> AudioStream | UpsampledStream:
        """A streaming session (:class:`~audiokit.streaming.audio.AudioStream`) of input at the output
        rate, or at half of it with ``input_rate`` (through the FIR of :meth:`upsample`:
        :class:`~audiokit.streaming.upsampled.UpsampledStream`, equal to :meth:`extend`); ``options``:
        ``edge_hz`` (Hz where the input's content stops; required at the output rate, the input's
        Nyquist by default at half of it), ``channels`` and ``compile``. ``session.push(x)`` takes float
        ``(batch_size, channels, n)`` at the input rate."""
        if input_rate in (None, self.sample_rate):
            return AudioStream(self, batch_size, **options)
        if input_rate != self.sample_rate // 2:
            raise UsageError(
                f"input_rate must be {self.sample_rate // 2} or {self.sample_rate} Hz, got {input_rate}"
            )
        options["edge_hz"] = check_edge_hz(options.get("edge_hz", NARROWBAND_EDGE_HZ), input_rate)
        return UpsampledStream(
            self.upsampler, AudioStream(self, batch_size, **options), compile=options.get("compile")
        )

    # -- maths -----------------------------------------------------------------------------------
    def _masks(self, edge_hz: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per item ``(N,)`` edge -> ``known (N, bins)`` (1 below the edge), ``keep (N, bins)`` (the
        crossfade weight of the input) and ``source (N, bins)`` (excitation bin of each bin)."""
        c = self.config
        k = torch.arange(bins, device=edge_hz.device)
        edge = (edge_hz * c.n_fft / c.sample_rate).floor().long().clamp(2, bins)[:, None]  # first missing bin
        known = (k < edge).float()
        ramp = ((edge - k) / c.crossfade_bins).clamp(0, 1)
        wideband = edge_hz[:, None] >= WIDEBAND_FRACTION * c.sample_rate / 2
        ramp = torch.where(wideband, torch.ones_like(ramp), ramp)
        width = (edge // 4 * 2).clamp_min(2)  # even, about half the known band
        offset = (k - edge).clamp_min(0) % width
        source = torch.where(k < edge, k, edge - width + offset)
        return known, ramp.float(), source

    def _extend_spectrum(
        self,
        spec: torch.Tensor,
        edge_hz: torch.Tensor,
        states: list | None = None,
        masks: tuple | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectra ``(N, bins, M)`` band-limited at ``edge_hz (N,)`` -> the extended spectra's real and
        imaginary parts (``masks``: :meth:`_masks` of the edges, when already made)."""
        c = self.config
        bins = spec.shape[1]
        known, keep, source = masks if masks is not None else self._masks(edge_hz, bins)
        # real arithmetic on real and imaginary parts, which compiled steps fuse (complex operations
        # would each fall back to a library call there)
        frames = spec.shape[-1]
        real, imag = spec.real * known[..., None], spec.imag * known[..., None]
        power = real.square() + imag.square()
        erb_db = 10.0 * torch.log10(torch.einsum("fb,nbm->nmf", self.erb, power) + 1e-10)
        scale = (power + 1e-12).pow((c.compression - 1) / 2)
        parts = torch.cat([real * scale, imag * scale], 1).transpose(1, 2)  # (N, M, 2 bins), compressed
        edge_feature = (edge_hz / (c.sample_rate / 2))[:, None, None].expand(-1, frames, 1)
        h = self.input_proj(torch.cat([(erb_db + 60.0) / 40.0, parts, edge_feature], -1))
        if states is None:
            h = self.lstm(F.gelu(self.frame_conv.forward_t(h)).transpose(1, 2)).transpose(1, 2)
        else:
            h = self.lstm.step_t(F.gelu(self.frame_conv.step_t(h, states[0])), states[1])
        gains = torch.exp(self.gain_head(h).clamp(-12.0, 4.0)) @ self.erb_spread.t()  # (N, M, bins)
        index = source[..., None].expand(-1, -1, frames)
        residual = self.residual_head(h).view(*h.shape[:2], bins, 2).transpose(1, 2)  # (N, bins, M, 2)
        # the residual scales with the frame's level, so silence stays exactly silent; the square root
        # of a silent frame's zero is taken of 1 and masked, so that its gradient is 0, not NaN
        mean_power = power.sum(1) / known.sum(1, keepdim=True)  # (N, M): of the known bins
        audible = mean_power > 0
        level = torch.where(audible, mean_power, 1.0).sqrt().masked_fill(~audible, 0.0)[:, None]  # (N, 1, M)
        gains, keep = gains.transpose(1, 2), keep[..., None]
        new_real = torch.gather(real, 1, index) * gains + residual[..., 0] * level
        new_imag = torch.gather(imag, 1, index) * gains + residual[..., 1] * level
        return keep * spec.real + (1.0 - keep) * new_real, keep * spec.imag + (1.0 - keep) * new_imag

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> StateList:
        device = device or self.gain_head.weight.device
        parts = (self.analysis, self.frame_conv, self.lstm, self.synthesis)
        return StateList([part.init_state(batch_size, device, dtype) for part in parts])

    def step(
        self, x: torch.Tensor, state: StateList, final: bool = False, edge_hz: float = 8000.0
    ) -> torch.Tensor:
        """Next ``x (N, 1, k * hop_length)`` output-rate samples -> ``(N, 1, k * hop_length)``, lagging
        by :attr:`output_lag`."""
        stft_state, conv_state, lstm_state, ola_state = state.children
        spec = self.analysis.step(x, stft_state)[:, 0]
        if torch.compiler.is_compiling():  # traced for compilation: the masks are part of the graph
            edges = torch.full((x.shape[0],), float(edge_hz), device=x.device)
            cached = (None, edges, self._masks(edges, spec.shape[1]))
        else:  # the masks depend on the edge only: made once a session
            key = (x.shape[0], float(edge_hz), x.device)
            cached = self.__dict__.get("_step_masks")
            if cached is None or cached[0] != key:
                edges = torch.full((x.shape[0],), float(edge_hz), device=x.device)
                cached = self.__dict__["_step_masks"] = (key, edges, self._masks(edges, spec.shape[1]))
        real, imag = self._extend_spectrum(spec, cached[1], [conv_state, lstm_state], cached[2])
        return self.synthesis.step_parts(real[:, None], imag[:, None], ola_state)

    def forward(self, wav: torch.Tensor, edge_hz: torch.Tensor | float) -> torch.Tensor:
        """Extended ``wav (B, C, T)`` at the output rate, band-limited at ``edge_hz`` (Hz, per item or
        one for all): same shape, aligned with the input."""
        batch, channels, length = wav.shape
        edges = torch.as_tensor(edge_hz, dtype=torch.float32, device=wav.device).reshape(-1)
        edges = edges.expand(batch).repeat_interleave(channels)
        spec = self.analysis(wav.reshape(batch * channels, 1, length))[:, 0]
        out = torch.complex(*self._extend_spectrum(spec, edges))
        return self.synthesis(out[:, None], length).reshape(batch, channels, length)

    def upsample(self, wav: torch.Tensor) -> torch.Tensor:
        """8 kHz ``(B, C, T)`` -> 16 kHz ``(B, C, 2 T)`` through the model's FIR, aligned (delay removed)."""
        delay = self.upsampler.delay
        padded = F.pad(wav, (0, -(-delay // 2)))
        return self.upsampler(padded)[..., delay : delay + 2 * wav.shape[-1]]

    @torch.no_grad()
    def extend(self, wav: torch.Tensor, input_rate: int, edge_hz: float | None = None) -> torch.Tensor:
        """Float ``wav`` ``(samples,)``, ``(channels, samples)`` or ``(batch, channels, samples)`` in
        [-1, 1] at ``input_rate`` Hz (half the output rate, or the output rate with content that stops
        early) -> the same shape with ``round(samples * rate / input_rate)`` samples at the output rate.

        ``edge_hz``: where the input's content stops (Hz, :func:`check_edge_hz`); by default the input's
        Nyquist at half the output rate, else measured per item (:func:`band_edge`). Float64 (or
        float16) audio is converted to float32; integer PCM, numpy arrays and NaN or infinite samples
        raise :class:`~audiokit.errors.UsageError`."""
        rate = self.sample_rate
        if input_rate not in (rate // 2, rate):
            raise UsageError(f"input_rate must be {rate // 2} or {rate} Hz, got {input_rate}; resample first")
        x = self.audio_input(wav, "BandwidthExtender.extend", ANY_AUDIO_SHAPE, (1, 2, 3), input_rate)
        batched = x.reshape((1,) * (3 - x.dim()) + x.shape)
        if edge_hz is None:
            edges = torch.tensor([band_edge(item, input_rate, rate) for item in batched])
        else:
            edges = torch.full((batched.shape[0],), check_edge_hz(edge_hz, input_rate))
        if input_rate != rate:
            batched = self.upsample(batched)
        with self.evaluating():
            out = self(batched, edges)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def check_edge_hz(edge_hz: float, input_rate: int) -> float:
    """``edge_hz`` as a float: a frequency in (0, ``input_rate`` / 2] Hz (where content can stop in audio at
    ``input_rate`` Hz), else :class:`~audiokit.errors.UsageError`."""
    value = real_number(edge_hz)
    if value is None or not 0.0 < value <= input_rate / 2:
        raise UsageError(
            f"edge_hz must be a frequency in (0, {input_rate / 2:g}] Hz (the Nyquist frequency of "
            f"{input_rate} Hz input), got {edge_hz!r}"
        )
    return value
