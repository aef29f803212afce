"""Real-time speech enhancer: ERB-band gains plus deep filtering of the low band, causal, 20 ms latency.

Signal path per 10 ms hop (``speech``-style defaults: 16 kHz, ``n_fft`` 320, hop 160):
1. causal STFT (sqrt-Hann, :class:`~audiokit.nn.spectral.CausalSpectrum`), spectrum ``X``;
2. features: log power in ``erb_bands`` ERB bands and (``low_band_features``, default) the power-law
   compressed complex spectrum of the lowest ``df_bins`` bins (``X |X|^(compression - 1)``);
3. a linear map, a causal depthwise conv over ``conv_kernel`` frames, and ``lstm_layers`` LSTM layers;
4. two heads: per-band gains in [0, 1] spread over the bins (``G``), and complex deep-filter
   coefficients ``D`` of order ``df_order`` for the low band (DeepFilterNet's idea, past frames only);
5. ``Y = G X`` on every bin, plus ``sum_k D_k X[m - k]`` on the low band; iSTFT by overlap-add.

With ``pitch`` (RNNoise's pitch analysis, :mod:`audiokit.nn.pitch`): the features also hold each
band's correlation of ``X`` with ``P``, the spectrum one pitch period back, the frame's periodicity
and (``pitch_lag_feature``, default) its lag, which says how high the voice is; with ``pitch_filter``
too, a third head gives per-band comb-filter strengths ``b`` in [0, 1], and step 5 gains
``G (X + b P) / (1 + b)`` instead of ``G X``. ``enhance-16k`` has both.

With ``noise_floor_rise`` (rates in dB per second, :mod:`audiokit.nn.noise_floor`): the features also
hold each band's power above its tracked noise floor, one block per rate (the model needs an estimate of
the noise under the speech; docs/training.md, session 15).

Knobs at inference: ``atten_lim_db`` (the output keeps at least this share of the input, as
DeepFilterNet's attenuation limit; None or ``math.inf``: no limit) and ``dry`` (wet/dry mix), both
applied to the spectrum: ``Y' = a X + (1 - a) Y`` with ``a = 1 - (1 - 10^(-atten_lim_db / 20)) (1 - dry)``.

Front-end ablation (``band_features``): the band log powers of step 2 come from the fixed ERB
filterbank on the STFT (``erb``, the shipped front end), from the same ERB bands of the causal STFT's
frames under the learnt window of a :class:`~audiokit.frontends.DiffSTFT` (``diffstft``: its window
length is learnt; with ``n_fft = 2 hop_length`` these are its centred frames), or from a causal
:class:`~audiokit.frontends.AdaptiveFilterbank` (``adaptive``: learnable FIR banks mixed per segment by
a content analyser; its frames end where the causal STFT's do). All three stream: ``diffstft`` windows
the frames the analysis keeps, ``adaptive`` steps with a state of its own (FIR history, segment sums,
PCEN smoother). Like the pitch analysis, the learnable front ends run through frames of digital silence
(which the network's states skip).

With ``band_norm_frames`` (:mod:`audiokit.nn.band_norm`): the band levels of step 2 are each relative to
their band's mean over the last ``band_norm_frames`` frames (a speaker's and a channel's slow spectral
envelope taken out, as cepstral mean normalisation does), plus one feature for the overall level.

With ``band_encoder="conv"`` (:mod:`audiokit.nn.band_conv`), the per-band features (log powers, pitch
correlations, powers above the noise floor) go through convolutions along the band axis before the
linear map, and the band gains (and comb strengths) come from a decoder that convolves along the bands
too, with the encoder's output as a skip connection: the same weights at every band, so a voice pitched
or shaped higher or lower than the training voices gives the same features moved (docs/training.md,
session 17). The deep filter's coefficients still come from the recurrent state by a linear map.

Trained weights grow without starting over (``--init`` of a run whose recipe asks for more):
:func:`grow_features` adds the pitch analysis or the noise floor, :func:`grow_hidden` widens the
recurrent network, :func:`add_vad_head` adds the voice-activity head (``vad_head``: a per-frame speech
logit from the recurrent state, trained as an auxiliary task as in RNNoise, never run when enhancing);
either way the grown model enhances exactly as the trained one did.

Algorithmic latency: ``n_fft`` samples (20 ms): the last frame that covers a sample ends ``n_fft``
samples after it. ``forward``/``enhance`` return exactly the input's length, aligned with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.dsp import erb_filterbank
from audiokit.errors import ModelError, UsageError
from audiokit.frontends import AdaptiveFilterbank, AdaptiveFilterbankState, DiffSTFT, is_unit_parameter
from audiokit.models.base import ANY_AUDIO_SHAPE, AudioModel, ModelConfig, real_number
from audiokit.nn import StreamableConv1d, StreamableLSTM
from audiokit.nn.band_conv import BandDecoder, BandEncoder
from audiokit.nn.band_norm import BandMeanNormalization, BandMeanState
from audiokit.nn.noise_floor import POWER_FLOOR, NoiseFloor, NoiseFloorState
from audiokit.nn.pitch import PitchSpectrum, band_pitch_correlation
from audiokit.nn.spectral import CausalInverseSpectrum, CausalSpectrum, DeepFilter
from audiokit.nn.state import StateList, keep_where, snapshot
from audiokit.nn.streaming import StreamingModule
from audiokit.streaming.audio import AudioStream


@dataclass
class EnhancerConfig(ModelConfig):
    """Architecture of an :class:`Enhancer` (mono); sizes in samples, bins, bands, frames and features."""

    training_only: ClassVar[tuple[str, ...]] = ("dropout",)

    n_fft: int = 320
    hop_length: int = 160
    erb_bands: int = 32
    df_bins: int = 64
    df_order: int = 3
    compression: float = 0.3
    hidden_dim: int = 128
    conv_kernel: int = 3
    lstm_layers: int = 2
    band_features: str = "erb"
    frontend_lr_scale: float = 1000.0
    pitch: bool = False
    pitch_filter: bool = True
    pitch_lags: tuple[int, int] = (40, 320)
    pitch_lag_feature: bool = True  # the pitch period among the features (not only its periodicity)
    noise_floor_rise: tuple[float, ...] = ()
    band_encoder: str = "linear"
    band_channels: int = 16
    dropout: float = 0.0  # training only (offline forward): on the recurrent network's input and output
    low_band_features: bool = True  # the low band's compressed complex spectrum among the features
    band_norm_frames: int = 0  # > 0: band levels relative to their mean over this many frames (and the level)
    vad_head: bool = False  # a per-frame speech logit from the recurrent state; only a training loss reads it

    def __post_init__(self) -> None:
        if self.channels != 1:
            raise ValueError(
                f"an enhancer is mono (channels are enhanced one by one), got channels={self.channels}"
            )
        bins = self.n_fft // 2 + 1
        if not 0 < self.df_bins <= bins:
            raise ValueError(f"df_bins must be in 1..{bins} (n_fft // 2 + 1), got {self.df_bins}")
        if self.df_order < 1 or self.conv_kernel < 1 or self.lstm_layers < 1:
            raise ValueError("df_order, conv_kernel and lstm_layers must be >= 1")
        if any(rate <= 0 for rate in self.noise_floor_rise):
            raise ValueError(f"noise_floor_rise rates must be > 0 dB per second, got {self.noise_floor_rise}")
        if self.band_norm_frames < 0:
            raise ValueError(f"band_norm_frames must be >= 0, got {self.band_norm_frames}")
        if self.band_encoder not in BAND_ENCODERS:
            raise ValueError(
                f"band_encoder must be one of {', '.join(BAND_ENCODERS)}, got {self.band_encoder!r}"
            )
        if self.band_channels < 1:
            raise ValueError(f"band_channels must be >= 1, got {self.band_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.frontend_lr_scale < math.inf:  # a negative rate climbs the loss
            raise ValueError(
                f"frontend_lr_scale must be a finite number >= 0 (0 freezes the front end), "
                f"got {self.frontend_lr_scale}"
            )
        if self.band_features not in BAND_FEATURES:
            raise ValueError(
                f"band_features must be one of {', '.join(BAND_FEATURES)}, got {self.band_features!r}"
            )


BAND_FEATURES = ("erb", "diffstft", "adaptive")
"""Where the band log powers come from (module docstring); every one streams."""
BAND_ENCODERS = ("linear", "conv")
"""How the network reads the bands and writes their gains (module docstring)."""


CONFIGS: dict[str, EnhancerConfig] = {
    # 16 kHz speech, 10 ms hop, 20 ms latency, pitch analysis and comb filter (docs/training.md, session
    # 14); band levels relative to their last second, no low-band spectrum among the features (version 2,
    # sessions 31-34; version 1, `enhance-16k@1`, had neither); each band's power above a noise floor
    # rising at most 5 and 20 dB/s (version 3, sessions 46-47)
    "enhance-16k": EnhancerConfig(
        name="enhance-16k",
        sample_rate=16000,
        pitch=True,
        low_band_features=False,
        band_norm_frames=100,
        noise_floor_rise=(5.0, 20.0),
    ),
}


def _silent_frames(spec: torch.Tensor) -> torch.Tensor:
    """Frames of digital silence in complex spectra ``(N, bins, M)``: ``(N, M)`` bool, true where the
    frame's samples were all exactly zero (so is its spectrum, to the last bit)."""
    return (spec.real == 0).all(1) & (spec.imag == 0).all(1)


def _take_frames(
    spec: torch.Tensor, pitch: tuple | None, bands: torch.Tensor | None, index: torch.Tensor
) -> tuple[torch.Tensor, tuple | None, torch.Tensor | None]:
    """The frames ``index (N, M')`` of each row of complex spectra ``(N, bins, M)``, of their pitch
    analysis (:class:`PitchSpectrum`'s spectra, periodicity and lag; or None) and of a learnable front
    end's band levels ``(N, M, erb_bands)`` (or None)."""

    def take(x: torch.Tensor, axis: int) -> torch.Tensor:
        shape, size = [1] * x.dim(), list(x.shape)
        shape[0], shape[axis] = index.shape
        size[axis] = index.shape[1]
        return x.gather(axis, index.view(shape).expand(size))

    if pitch is not None:
        pitch = (take(pitch[0], 2), take(pitch[1], 1), take(pitch[2], 1))
    return take(spec, 2), pitch, None if bands is None else take(bands, 1)


def _frame(
    pitch: tuple | None, bands: torch.Tensor | None, j: int
) -> tuple[tuple | None, torch.Tensor | None]:
    """Frame ``j`` of the pitch analysis and of a learnable front end's band levels (see
    :func:`_take_frames`), each still with its frame axis."""
    if pitch is not None:
        pitch = (pitch[0][..., j : j + 1], pitch[1][:, j : j + 1], pitch[2][:, j : j + 1])
    return pitch, None if bands is None else bands[:, j : j + 1]


def _put_frames(kept: torch.Tensor, index: torch.Tensor, frames: int) -> torch.Tensor:
    """``kept (N, M', ...)``, the outputs of the frames :func:`_take_frames` took, put back at those
    frames of a zero ``(N, frames, ...)``."""
    place = index.reshape(*index.shape, *([1] * (kept.dim() - 2))).expand_as(kept)
    return kept.new_zeros(kept.shape[0], frames, *kept.shape[2:]).scatter(1, place, kept)


def _may_branch(x: torch.Tensor) -> bool:
    """Whether a streaming step on ``x`` may branch on its data: eager on a CPU (no synchronisation to
    pay, no trace to keep shape-static: compiled steps and CUDA graphs take every branch's path)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def mix_factor(atten_lim_db: float | None, dry: float) -> float:
    """Share ``a`` of the input spectrum kept in the output (0 = fully enhanced); ``atten_lim_db`` None
    and ``math.inf`` both mean no limit (``audiokit enhance --atten-lim-db inf``).
    :class:`~audiokit.errors.UsageError` for a ``dry`` outside [0, 1] or an ``atten_lim_db`` that is not a
    number of dB >= 0 (NaN included)."""
    mix, limit = real_number(dry), real_number(atten_lim_db)
    if mix is None or not 0.0 <= mix <= 1.0:
        raise UsageError(f"dry must be in [0, 1], got {dry!r}")
    if atten_lim_db is not None and (limit is None or not limit >= 0.0):  # NaN fails the comparison
        raise UsageError(
            f"atten_lim_db must be a number of dB >= 0 (None or inf: no limit), got {atten_lim_db!r}"
        )
    floor = 0.0 if limit is None else 10.0 ** (-limit / 20.0)  # 0.0 at inf
    return 1.0 - (1.0 - floor) * (1.0 - mix)


class Enhancer(AudioModel, StreamingModule, family="enhancer", config_class=EnhancerConfig, configs=CONFIGS):
    """Causal speech enhancer at ``config.sample_rate``: ``(B, C, T) -> (B, C, T)``.

    Channels are enhanced independently (folded into the batch).
    """

    config: EnhancerConfig

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__(config)
        c = config
        self.analysis = CausalSpectrum(c.n_fft, c.hop_length)
        self.synthesis = CausalInverseSpectrum(c.n_fft, c.hop_length)
        bands = erb_filterbank(c.sample_rate, c.n_fft, c.erb_bands)  # (bands, bins)
        self.register_buffer("erb", bands, persistent=False)
        spread = bands.t() / bands.t().sum(1, keepdim=True).clamp_min(1e-8)  # (bins, bands), rows sum to 1
        self.register_buffer("erb_spread", spread, persistent=False)
        self.band_frontend = self._band_frontend(c)
        self.pitch = PitchSpectrum(c.n_fft, c.hop_length, *c.pitch_lags) if c.pitch else None
        per_frame = tuple(rate * c.hop_length / c.sample_rate for rate in c.noise_floor_rise)
        self.noise_floor = NoiseFloor(c.erb_bands, per_frame) if per_frame else None
        self.band_norm = None
        if c.band_norm_frames:
            self.band_norm = BandMeanNormalization(c.erb_bands, c.band_norm_frames)
        comb = c.pitch and c.pitch_filter
        if c.band_encoder == "conv":
            per_band = len(band_planes(c))
            self.band_encoder = BandEncoder(per_band, c.band_channels)
            self.band_decoder = BandDecoder(
                c.hidden_dim, c.band_channels, c.erb_bands, [2.0, -3.0][: 1 + comb]
            )
            width = c.band_channels * c.erb_bands + sum(size for _, size in global_features(c))
        else:
            self.band_encoder = self.band_decoder = None
            width = sum(size for _, size in feature_layout(c))
        self.input_proj = nn.Linear(width, c.hidden_dim)
        self.frame_conv = StreamableConv1d(
            c.hidden_dim, c.hidden_dim, c.conv_kernel, groups=c.hidden_dim, causal=True, norm="none"
        )
        self.lstm = StreamableLSTM(c.hidden_dim, c.lstm_layers, skip=True, fast_steps=True)
        # gains start near pass-through (~0.88), comb strengths nearly off (~0.05); the conv decoder alike.
        # The heads are registered before df_head: the parameter order is the optimiser state's layout.
        self.gain_head = self.comb_head = None
        if self.band_decoder is None:
            self.gain_head = nn.Linear(c.hidden_dim, c.erb_bands)
            nn.init.constant_(self.gain_head.bias, 2.0)
        self.df_head = nn.Linear(c.hidden_dim, c.df_bins * c.df_order * 2)
        self.deep_filter = DeepFilter(c.df_bins, c.df_order)
        if self.band_decoder is None and comb:
            self.comb_head = nn.Linear(c.hidden_dim, c.erb_bands)
            nn.init.normal_(self.comb_head.weight, std=1e-3)
            nn.init.constant_(self.comb_head.bias, -3.0)
        nn.init.normal_(self.df_head.weight, std=1e-3)
        nn.init.zeros_(self.df_head.bias)
        # an auxiliary output (RNNoise's voice activity): training reads it, enhancing never runs it
        self.vad_head = nn.Linear(c.hidden_dim, 1) if c.vad_head else None

    @staticmethod
    def _band_frontend(c: EnhancerConfig) -> nn.Module | None:
        """The learnable front end of ``c.band_features`` (None for the fixed ERB bands)."""
        if c.band_features == "diffstft":  # starts at 3/4 of n_fft so that it can grow or shrink
            stft = DiffSTFT(c.n_fft, 0.75 * c.n_fft, float(c.hop_length), "hann", pad_mode="constant")
            stft.hop_length.requires_grad_(False)
            return stft
        if c.band_features == "adaptive":
            return AdaptiveFilterbank(c.sample_rate, n_bands=c.erb_bands, hop_length=c.hop_length)
        return None

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multiples for the front end's parameters in samples or Hz (trainer groups)."""
        return {
            name: self.config.frontend_lr_scale
            for name, parameter in self.named_parameters()
            if parameter.requires_grad and is_unit_parameter(name)
        }

    # -- interface -------------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def algorithmic_latency(self) -> int:
        """Samples of input needed after a sample before its output is final: ``n_fft``."""
        return self.config.n_fft

    @property
    def output_lag(self) -> int:
        """Samples by which :meth:`step`'s output lags its input: ``n_fft - hop_length``."""
        return self.synthesis.delay

    row_step_options: ClassVar[tuple[str, ...]] = ("mix",)
    """The :meth:`step_options` that :meth:`step` also takes per row, as a float64 tensor ``(N,)``."""

    @staticmethod
    def step_options(atten_lim_db: float | None = None, dry: float = 0.0) -> dict[str, float]:
        """:meth:`step`'s keyword arguments for the user-facing knobs."""
        return {"mix": mix_factor(atten_lim_db, dry)}

    # -- maths -----------------------------------------------------------------------------------
    def _erb_power(self, spec: torch.Tensor) -> torch.Tensor:
        """Power ``(N, M, erb_bands)`` in the fixed ERB bands of the spectra ``spec (N, bins, M)``."""
        return torch.einsum("fb,nbm->nmf", self.erb, spec.real.square() + spec.imag.square())

    def _learnt_band_db(
        self, frames: torch.Tensor, wav: torch.Tensor, state: AdaptiveFilterbankState | None = None
    ) -> torch.Tensor | None:
        """Band log powers ``(N, M, erb_bands)`` in dB from ``band_features``' learnable front end, for the
        causal STFT's frames ``frames (N, 1, M, n_fft)`` (not windowed; None for the fixed ERB bands, which
        :meth:`_features` takes from the spectra). ``diffstft``: the ERB bands of those frames under the
        learnt window (:meth:`DiffSTFT.frame_window`); ``adaptive``: the filterbank's frames that end where
        they end, from their audio ``wav``: offline (``state`` None) the whole input ``(N, 1, T)``,
        streaming the step's ``(N, 1, M * hop)`` from and into the filterbank's ``state``."""
        frontend = self.band_frontend
        if frontend is None:
            return None
        if isinstance(frontend, DiffSTFT):  # the same samples as the causal frames, the learnt window
            spec = self.analysis.spectrum(frames, frontend.frame_window().to(frames.dtype))[:, 0]
            return 10.0 * torch.log10(self._erb_power(spec) + POWER_FLOOR)
        if state is None:  # the input padded as the causal STFT pads it: frame m ends at (m + 1) hop
            bands = frontend(F.pad(wav[:, 0], (0, frames.shape[-2] * self.config.hop_length - wav.shape[-1])))
        else:
            bands = frontend.step(wav[:, 0], state)
        return (10.0 / math.log(10.0)) * bands.transpose(1, 2)  # natural log -> dB

    def _features(
        self,
        spec: torch.Tensor,
        pitch: tuple | None = None,
        bands: torch.Tensor | None = None,
        noise_state: NoiseFloorState | None = None,
        norm_state: BandMeanState | None = None,
    ) -> torch.Tensor:
        """Complex spectra ``(N, bins, M)`` (with ``config.pitch``, :class:`PitchSpectrum`'s output; with a
        learnable front end, its band levels, :meth:`_learnt_band_db`; streaming, the noise floor's and
        the band normalisation's states) -> features ``(N, M, features)`` in the order of
        :func:`feature_layout`."""
        erb_power = self._erb_power(spec)
        erb_db = 10.0 * torch.log10(erb_power + POWER_FLOOR) if bands is None else bands
        if self.band_norm is None:
            features = [(erb_db + 60.0) / 40.0]
        else:
            norm = self.band_norm
            relative, mean = norm(erb_db) if norm_state is None else norm.step(erb_db, norm_state)
            features = [relative / 20.0, (mean.mean(-1, keepdim=True) + 60.0) / 40.0]
        if self.config.low_band_features:
            low = spec[:, : self.config.df_bins]
            real, imag = low.real, low.imag
            scale = (real.square() + imag.square() + 1e-12).pow((self.config.compression - 1) / 2)
            features.append(torch.cat([real * scale, imag * scale], 1).transpose(1, 2))  # (N, M, 2 df_bins)
        if pitch is not None:
            pitch_spec, periodicity, lag = pitch
            features += [
                band_pitch_correlation(spec, pitch_spec, self.erb, erb_power),
                periodicity.unsqueeze(-1),
            ]
            if self.config.pitch_lag_feature:
                features.append((lag.to(spec.real.dtype) / self.config.pitch_lags[1]).unsqueeze(-1))
        if self.noise_floor is not None:
            floor = self.noise_floor
            above = floor(erb_power) if noise_state is None else floor.step(erb_power, noise_state)
            features.append(above / 20.0)
        return torch.cat(features, -1)

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> StateList:
        """Zero streaming state of ``batch_size`` mono streams (and the blocks' prepared weights): the
        analysis', frame conv's, LSTM's, deep filter's and synthesis' states, then those of the pitch
        analysis, the noise floor, the band normalisation and the learnable front end that the model has
        (``diffstft``'s is None: it reads the analysis' frames)."""
        device = device or self.df_head.weight.device
        parts = (self.analysis, self.frame_conv, self.lstm, self.deep_filter, self.synthesis)
        parts += tuple(part for part in (self.pitch, self.noise_floor, self.band_norm) if part is not None)
        states = [part.init_state(batch_size, device, dtype) for part in parts]
        if isinstance(self.band_frontend, AdaptiveFilterbank):
            states.append(self.band_frontend.init_state(batch_size, device, dtype))
        elif self.band_frontend is not None:
            states.append(None)
        return StateList(states)

    def _enhance_spectrum(
        self,
        spec: torch.Tensor,
        mix: float | torch.Tensor,
        states: list | None = None,
        pitch: tuple | None = None,
        bands: torch.Tensor | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Complex spectra ``(N, bins, M)`` -> the enhanced spectra's real and imaginary parts (each
        ``(N, bins, M)``), offline (``states=None``) or one step on, the band gains
        ``(N, M, erb_bands)`` in [0, 1] the network chose, and the recurrent state ``(N, M, hidden_dim)``
        they came from (zeros, as the gains, on frames of digital silence).

        ``mix``: :func:`mix_factor`'s share of the input kept, one for all rows or a float64 ``(N,)`` of
        one per row, on any device (the same float32 arithmetic per row either way).

        ``states``: the frame conv's, the LSTM's, the deep filter's, the noise floor's and the band
        normalisation's (or None) streaming states; ``pitch``: the pitch analysis of the same frames (with
        ``config.pitch``); ``bands``: a learnable front end's band levels of them (:meth:`_learnt_band_db`).
        """
        c = self.config
        # frames of digital silence (a muted microphone, leading zeros) are skipped by the trackers and the
        # recurrent network, whose states would otherwise settle on them and pass the noise after them
        silent = _silent_frames(spec)  # (N, M)
        if (states is None or _may_branch(spec)) and not bool(silent.any()):
            silent = None  # none to skip (a test of the data: offline, and eager steps on a CPU)
        if states is None:  # offline (training too)
            h, encoded = self._offline_network(spec, pitch, bands, silent)
        else:
            h, encoded = self._stepped_network(spec, pitch, bands, silent, states)
        if self.band_decoder is not None:
            logits = self.band_decoder(h, encoded)  # (N, M, 1 or 2, erb_bands)
            band_gains = torch.sigmoid(logits[:, :, 0])
            comb_bands = torch.sigmoid(logits[:, :, 1]) if logits.shape[2] > 1 else None
        else:
            band_gains = torch.sigmoid(self.gain_head(h))
            comb_bands = None if self.comb_head is None else torch.sigmoid(self.comb_head(h))
        # the spectral arithmetic on real and imaginary parts, which compiled steps fuse (complex
        # operations would each fall back to a library call there)
        real, imag = spec.real, spec.imag
        gains = (band_gains @ self.erb_spread.t()).transpose(1, 2)  # spread over the bins (N, bins, M)
        if comb_bands is None:
            out_real, out_imag = real * gains, imag * gains
        else:
            comb = (comb_bands @ self.erb_spread.t()).transpose(1, 2)
            scale = gains / (1.0 + comb)
            out_real = (real + comb * pitch[0].real) * scale
            out_imag = (imag + comb * pitch[0].imag) * scale
        coef = self.df_head(h).view(h.shape[0], h.shape[1], c.df_bins, c.df_order, 2)
        coef = coef.permute(4, 0, 2, 1, 3)  # (real/imag, N, df_bins, M, order)
        if states is None:
            df_state = self.deep_filter.init_state(real.shape[0], real.device, real.dtype)
        else:
            df_state = states[2]
        low_real, low_imag = self.deep_filter.filter_parts(
            real[:, : c.df_bins], imag[:, : c.df_bins], coef[0], coef[1], df_state
        )
        out_real = torch.cat([out_real[:, : c.df_bins] + low_real, out_real[:, c.df_bins :]], 1)
        out_imag = torch.cat([out_imag[:, : c.df_bins] + low_imag, out_imag[:, c.df_bins :]], 1)
        if silent is not None:  # silence in, silence out (the deep filter reaches back past its start)
            voiced = ~silent
            out_real, out_imag = out_real * voiced[:, None], out_imag * voiced[:, None]
            # what the heads read there depends on the batch (offline: padding of the gathered frames)
            band_gains, h = band_gains * voiced[..., None], h * voiced[..., None]
        if isinstance(mix, torch.Tensor):  # one share per row: (N,), float64 (rounded where it lies)
            keep, wet = (m.to(real.dtype).to(real.device)[:, None, None] for m in (mix, 1.0 - mix))
            out_real, out_imag = keep * real + wet * out_real, keep * imag + wet * out_imag
        elif mix:
            out_real, out_imag = mix * real + (1.0 - mix) * out_real, mix * imag + (1.0 - mix) * out_imag
        return (out_real, out_imag), band_gains, h

    def _project(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features ``(N, M, features)`` -> the recurrent network's input ``(N, M, hidden)`` and, with a
        band encoder, its per-band encoding ``(N, M, band_channels, erb_bands)`` (else None)."""
        encoded = None
        if self.band_encoder is not None:
            c = self.config
            encoded = self.band_encoder(_per_band(features, c))
            columns = _block_columns(c)
            globals_ = [features[..., columns[name]][..., -width:] for name, width in global_features(c)]
            features = torch.cat([encoded.flatten(2), *globals_], -1)
        return self.input_proj(features), encoded

    def _offline_network(
        self, spec: torch.Tensor, pitch: tuple | None, bands: torch.Tensor | None, silent: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The features and the recurrent network over all frames of ``spec (N, bins, M)``: ``h (N, M,
        hidden)`` and the band encoding (or None). The frames ``silent (N, M)`` marks (None: none) are
        left out: each item's other frames run as one sequence, their outputs put back in place (what the
        silent frames get there is never used: their output is zero)."""
        if silent is None:
            h, encoded = self._project(self._features(spec, pitch, bands))
            h = self.lstm(F.gelu(self.frame_conv.forward_t(self._dropout(h))).transpose(1, 2)).transpose(1, 2)
            return self._dropout(h), encoded
        frames = spec.shape[-1]
        positions = torch.arange(frames, device=spec.device)
        order = torch.argsort(
            silent.to(torch.int64) * frames + positions, dim=1
        )  # the others first, in order
        index = order[:, : max(int((~silent).sum(1).max()), 1)]  # (N, M')
        h, encoded = self._offline_network(*_take_frames(spec, pitch, bands, index), None)
        return _put_frames(h, index, frames), None if encoded is None else _put_frames(encoded, index, frames)

    def _stepped_network(
        self,
        spec: torch.Tensor,
        pitch: tuple | None,
        bands: torch.Tensor | None,
        silent: torch.Tensor | None,
        states: list,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`_offline_network`, one step on: the frame conv's, the LSTM's, the noise floor's and the
        band normalisation's states kept as they were through the frames ``silent`` marks (None: none).
        Eager on a CPU, where every row has the same silent frames (one stream, say), the other frames
        run together, as offline; otherwise (compiled, on a GPU, rows that differ) frame by frame,
        through ``torch.where`` (no branch on the data, so compiled steps and CUDA graphs take it)."""
        conv_state, lstm_state, _, noise_state, norm_state = states
        tracked = (conv_state, lstm_state, noise_state, norm_state)
        if silent is None:
            return self._network_step(spec, pitch, bands, tracked)
        if _may_branch(spec) and silent.shape[0] and bool((silent == silent[:1]).all()):
            frames = silent.shape[1]
            index = (~silent[0]).nonzero()[:, 0].expand(silent.shape[0], -1)  # (N, M'), the same in every row
            h, encoded = self._network_step(*_take_frames(spec, pitch, bands, index), tracked)
            return _put_frames(h, index, frames), None if encoded is None else _put_frames(
                encoded, index, frames
            )
        hs, encodings = [], []
        for j in range(spec.shape[-1]):
            before = [snapshot(state) for state in tracked]
            h, encoded = self._network_step(spec[..., j : j + 1], *_frame(pitch, bands, j), tracked)
            hs.append(h)
            encodings.append(encoded)
            for state, old in zip(tracked, before, strict=True):
                keep_where(state, old, silent[:, j])
        if not hs:  # no new frames: nothing out, the states stay
            return self._network_step(spec, pitch, bands, tracked)
        return torch.cat(hs, 1), None if encodings[0] is None else torch.cat(encodings, 1)

    def _network_step(
        self, spec: torch.Tensor, pitch: tuple | None, bands: torch.Tensor | None, tracked: tuple
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The features and the recurrent network over the next frames ``spec (N, bins, k)``, every one
        of them, from and into the states ``tracked`` (frame conv, LSTM, noise floor, band
        normalisation): ``h (N, k, hidden)`` and the band encoding (or None)."""
        conv_state, lstm_state, noise_state, norm_state = tracked
        h, encoded = self._project(self._features(spec, pitch, bands, noise_state, norm_state))
        return self.lstm.step_t(F.gelu(self.frame_conv.step_t(h, conv_state)), lstm_state), encoded

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """``config.dropout`` of the features ``h`` while training offline; ``h`` itself otherwise."""
        return F.dropout(h, self.config.dropout) if self.training and self.config.dropout else h

    def ideal_band_gains(self, noisy: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets for the band gains (RNNoise's): ``sqrt(E_clean / E_noisy)`` per ERB band and
        causal frame, at most 1, ``(N, M, erb_bands)`` for mono ``(N, 1, T)`` pairs, and the mask of the
        bands whose noisy energy is above 1e-9 (where the ratio means something)."""
        energies = []
        for wav in (noisy, clean):
            spec = self.analysis(wav)[:, 0]
            energies.append(self._erb_power(spec))
        valid = energies[0] > 1e-9
        return (energies[1] / energies[0].clamp_min(1e-9)).sqrt().clamp(max=1.0), valid

    def speech_frames(
        self, clean: torch.Tensor, range_db: float = 30.0, floor_db: float = -65.0
    ) -> torch.Tensor:
        """Training targets for the voice-activity head (``vad_head``): 1.0 where a causal frame of mono
        ``clean (N, 1, T)`` holds speech, i.e. its mean power is within ``range_db`` of the item's loudest
        frame and above ``floor_db`` dBFS (a full-scale sine is -3), else 0.0; ``(N, M)``, the frames of
        :meth:`forward`."""
        spec = self.analysis(clean)[:, 0]
        window_power = self.analysis.window.square().sum()
        power = (spec.real.square() + spec.imag.square()).sum(1) * (2.0 / (self.config.n_fft * window_power))
        level = 10.0 * torch.log10(power + 1e-12)
        loudest = level.amax(-1, keepdim=True)
        return ((level > loudest - range_db) & (level > floor_db)).to(clean.dtype)

    def step(
        self, x: torch.Tensor, state: StateList, final: bool = False, mix: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        """Next ``x (N, 1, k * hop_length)`` mono samples -> ``(N, 1, k * hop_length)`` output samples.

        The output lags the input by ``n_fft - hop_length`` samples (see :class:`CausalInverseSpectrum`).
        ``mix`` is :func:`mix_factor`'s share of the input kept: one number, or a float64 tensor ``(N,)``
        of one per row (streams of several knobs in one batched step, :attr:`row_step_options`).
        """
        stft_state, conv_state, lstm_state, df_state, ola_state = state.children[:5]
        frames = self.analysis.frames(x, stft_state)
        spec = self.analysis.spectrum(frames)[:, 0]  # (N, bins, M)
        extra = iter(state.children[5:])
        pitch = None if self.pitch is None else self.pitch.step(x, next(extra))
        noise_state = None if self.noise_floor is None else next(extra)
        norm_state = None if self.band_norm is None else next(extra)
        bands = None if self.band_frontend is None else self._learnt_band_db(frames, x, next(extra))
        states = [conv_state, lstm_state, df_state, noise_state, norm_state]
        (real, imag), _, _ = self._enhance_spectrum(spec, mix, states, pitch=pitch, bands=bands)
        return self.synthesis.step_parts(real[:, None], imag[:, None], ola_state)

    def forward(
        self,
        wav: torch.Tensor,
        atten_lim_db: float | None = None,
        dry: float = 0.0,
        return_gains: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Enhanced ``wav (B, C, T)``: same shape, aligned with the input; with ``return_gains`` also
        the band gains ``(B * C, frames, erb_bands)`` (for :meth:`ideal_band_gains` losses) and, with
        ``config.vad_head``, the voice-activity logits ``(B * C, frames)`` (else None; for
        :meth:`speech_frames` targets)."""
        batch, channels, length = wav.shape
        mono = wav.reshape(batch * channels, 1, length)
        frames = self.analysis.all_frames(mono)
        spec = self.analysis.spectrum(frames)[:, 0]
        pitch = None if self.pitch is None else self.pitch(mono)
        bands = self._learnt_band_db(frames, mono)
        mix = mix_factor(atten_lim_db, dry)
        parts, band_gains, hidden = self._enhance_spectrum(spec, mix, pitch=pitch, bands=bands)
        out = self.synthesis(torch.complex(*parts)[:, None], length).reshape(batch, channels, length)
        if not return_gains:
            return out
        vad_logits = None if self.vad_head is None else self.vad_head(hidden)[..., 0]
        return out, band_gains, vad_logits

    @torch.no_grad()
    def enhance(self, wav: torch.Tensor, atten_lim_db: float | None = None, dry: float = 0.0) -> torch.Tensor:
        """Inference (``forward`` without gradients, in eval mode; the model's mode is restored after) of
        float ``wav`` ``(samples,)``, ``(channels, samples)`` (as :func:`audiokit.io.load` returns it) or
        ``(batch, channels, samples)`` in [-1, 1] at :attr:`sample_rate` Hz: enhanced audio of the same
        shape, aligned with it.

        ``atten_lim_db`` (dB >= 0; ``None`` or ``math.inf``: no limit) and ``dry`` (in [0, 1]): see
        :func:`mix_factor`. Float64 (or float16) audio is converted to float32; integer PCM, numpy arrays
        and NaN or infinite samples raise :class:`~audiokit.errors.UsageError`."""
        x = self.audio_input(wav, "Enhancer.enhance", ANY_AUDIO_SHAPE, ndims=(1, 2, 3))
        with self.evaluating():
            out = self(x.reshape((1,) * (3 - x.dim()) + x.shape), atten_lim_db, dry)
        return out.reshape(x.shape)

    def stream(self, batch_size: int = 1, **options: Any) -> AudioStream:
        """A streaming session of ``batch_size`` items (:class:`~audiokit.streaming.audio.AudioStream`);
        ``options``: ``channels`` per item, ``atten_lim_db``, ``dry`` (as :meth:`enhance`), ``compile``.
        ``session.push(x)`` takes float ``(batch_size, channels, n)`` at :attr:`sample_rate` Hz."""
        return AudioStream(self, batch_size, **options)

    def multiply_adds_per_second(self) -> float:
        """Approximate multiply-adds per second of audio of the network (STFTs excluded)."""
        c = self.config
        per_frame = (
            (c.erb_bands + 2 * c.df_bins * c.low_band_features + bool(c.band_norm_frames)) * c.hidden_dim
            + c.hidden_dim * c.conv_kernel
            + c.lstm_layers * 4 * c.hidden_dim * 2 * c.hidden_dim
            + c.hidden_dim * (c.erb_bands + 2 * c.df_bins * c.df_order)
            + (c.n_fft // 2 + 1) * (c.erb_bands * 2 + c.df_order * 4)
        )
        per_frame += len(c.noise_floor_rise) * c.erb_bands * (c.hidden_dim + 4)
        per_frame += c.erb_bands * c.band_norm_frames * bool(c.band_norm_frames)  # the sliding sums
        if c.band_encoder == "conv":  # encoder convs, the wider input map, decoder; not the linear heads
            per_band, width = len(band_planes(c)), c.band_channels
            per_frame += c.erb_bands * 3 * width * (per_band + width)  # two encoder convs
            inputs = width * c.erb_bands + sum(size for _, size in global_features(c))
            per_frame += (inputs - sum(size for _, size in feature_layout(c))) * c.hidden_dim
            per_frame += c.hidden_dim * width * c.erb_bands + c.erb_bands * width * (3 * width + 2)
            per_frame -= c.hidden_dim * c.erb_bands * (2 if c.pitch and c.pitch_filter else 1)
        if c.pitch:  # the lag search (three FFTs of fft_size), features, the comb head and filter
            fft_size = self.pitch.fft_size
            per_frame += 3 * fft_size * math.log2(fft_size) + pitch_width(c) * c.hidden_dim
            if c.pitch_filter:
                per_frame += c.hidden_dim * c.erb_bands + (c.n_fft // 2 + 1) * (c.erb_bands + 4)
        return per_frame * c.sample_rate / c.hop_length


def feature_layout(config: EnhancerConfig) -> list[tuple[str, int]]:
    """The blocks of an enhancer's input features, in order: ``(name, width)``."""
    layout = [("bands", config.erb_bands)] + ([("level", 1)] if config.band_norm_frames else [])
    if config.low_band_features:
        layout.append(("low_band", 2 * config.df_bins))
    if config.pitch:
        layout.append(("pitch", pitch_width(config)))
    if config.noise_floor_rise:
        layout.append(("noise_floor", len(config.noise_floor_rise) * config.erb_bands))
    return layout


def pitch_width(config: EnhancerConfig) -> int:
    """Features of the pitch analysis: each band's correlation, the periodicity and (optionally) the lag."""
    return config.erb_bands + 1 + config.pitch_lag_feature


def band_planes(config: EnhancerConfig) -> list[str]:
    """The per-band feature planes :class:`~audiokit.nn.band_conv.BandEncoder` reads, in order."""
    planes = ["bands"] + (["pitch"] if config.pitch else [])
    return planes + [f"noise_floor_{i}" for i in range(len(config.noise_floor_rise))]


def global_features(config: EnhancerConfig) -> list[tuple[str, int]]:
    """The feature blocks (the last ``width`` columns of each) that bypass the band encoder."""
    level = [("level", 1)] if config.band_norm_frames else []
    low_band = [("low_band", 2 * config.df_bins)] if config.low_band_features else []
    return level + low_band + ([("pitch", 1 + config.pitch_lag_feature)] if config.pitch else [])


def _per_band(features: torch.Tensor, config: EnhancerConfig) -> torch.Tensor:
    """``(N, M, features)`` -> the per-band planes ``(N, M, planes, erb_bands)`` of :func:`band_planes`."""
    columns, bands = _block_columns(config), config.erb_bands
    planes = [features[..., columns["bands"]]]
    if config.pitch:
        planes.append(features[..., columns["pitch"]][..., :bands])
    if config.noise_floor_rise:
        floors = features[..., columns["noise_floor"]]
        planes += list(floors.unflatten(-1, (len(config.noise_floor_rise), bands)).unbind(-2))
    return torch.stack(planes, -2)


def grow_features(model: Enhancer, config: EnhancerConfig) -> Enhancer:
    """A trained enhancer as one of ``config``, the same architecture with more analysis (the pitch
    analysis, the noise floor), to continue training from where it stood: the new features enter the
    input map with zero weights, and a new comb filter (``pitch_filter``) starts with zero weights and its
    initial bias (strength ~0.05). Without a new comb filter the grown model enhances exactly as
    ``model`` does."""
    current = model.config
    if current.band_encoder != "linear" or config.band_encoder != "linear":
        raise ModelError(f"{current.name}: only enhancers with band_encoder='linear' grow features")
    analysis = {"pitch": current.pitch, "pitch_filter": current.pitch_filter}
    same = dataclasses.replace(
        config, name=current.name, noise_floor_rise=current.noise_floor_rise, **analysis
    )
    removes = (current.pitch and (not config.pitch or current.pitch_filter and not config.pitch_filter)) or (
        current.noise_floor_rise and config.noise_floor_rise != current.noise_floor_rise
    )
    if same != current or removes:
        raise ModelError(
            f"{current.name}: the architecture differs beyond added pitch or noise-floor analysis"
        )
    grown = Enhancer(dataclasses.replace(config, name=current.name)).to(model.gain_head.weight.device)
    state = grown.state_dict()
    old_columns = _block_columns(current)
    for name, value in model.state_dict().items():
        if name == "input_proj.weight":
            weight = value.new_zeros(state[name].shape)
            for block, columns in _block_columns(grown.config).items():
                if block in old_columns:
                    weight[:, columns] = value[:, old_columns[block]]
            state[name] = weight
        else:
            state[name] = value
    if grown.comb_head is not None and model.comb_head is None:
        state["comb_head.weight"] = torch.zeros_like(state["comb_head.weight"])
    grown.load_state_dict(state)
    return grown


def grow_hidden(model: Enhancer, hidden_dim: int, seed: int = 0) -> Enhancer:
    """A copy of ``model`` whose recurrent network is ``hidden_dim`` wide (>= the current width) and
    that enhances exactly as ``model`` does (Net2Net-style): the new units of the input map, the frame
    conv and every LSTM gate start freshly initialised (seeded by ``seed``), the trained units read
    nothing from them (zero weights), and the heads read them with zero weights, so they add nothing
    until trained. Only enhancers with ``band_encoder='linear'`` grow."""
    current = model.config
    width = current.hidden_dim
    if current.band_encoder != "linear":
        raise ModelError(f"{current.name}: only enhancers with band_encoder='linear' grow wider")
    if hidden_dim < width:
        raise ModelError(f"{current.name}: hidden_dim cannot shrink ({width} -> {hidden_dim})")
    if hidden_dim == width:
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = Enhancer(dataclasses.replace(current, hidden_dim=hidden_dim))
    grown = grown.to(model.df_head.weight.device)
    state = grown.state_dict()
    for name, value in model.state_dict().items():
        fresh = state[name]
        if fresh.shape == value.shape:
            state[name] = value
        elif name.startswith("lstm.lstm."):  # gates [i, f, g, o] stacked along dim 0
            gates = fresh.view(4, hidden_dim, *fresh.shape[1:])
            old = value.view(4, width, *value.shape[1:])
            if value.dim() == 2:
                gates[:, :width] = 0.0
                gates[:, :width, : old.shape[-1]] = old
            else:
                gates[:, :width] = old
        elif name.startswith(("input_proj.", "frame_conv.")):  # new output units keep their fresh init
            fresh[:width] = value
        else:  # the heads: read the new units with zero weights
            fresh.zero_()
            fresh[:, :width] = value
    grown.load_state_dict(state)
    return grown


def add_vad_head(model: Enhancer, seed: int = 0) -> Enhancer:
    """A copy of ``model`` with a freshly initialised voice-activity head (seeded by ``seed``); it enhances
    exactly as ``model`` does (the head only feeds a training loss)."""
    if model.config.vad_head:
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = Enhancer(dataclasses.replace(model.config, vad_head=True))
    grown = grown.to(model.df_head.weight.device)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("vad_head.") for name in missing):
        raise ModelError(f"{model.config.name}: weights do not fit the model ({missing + unexpected})")
    return grown


def _block_columns(config: EnhancerConfig) -> dict[str, slice]:
    columns, start = {}, 0
    for name, width in feature_layout(config):
        columns[name] = slice(start, start + width)
        start += width
    return columns
