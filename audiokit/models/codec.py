"""Neural audio codec: causal SEANet encoder, residual VQ, SEANet or iSTFT (Vocos-style) decoder.

Lengths. ``encode`` maps ``T`` samples to ``ceil((T + target_delay) / hop_length)`` frames and
``decode`` returns exactly ``T`` samples (the length travels in :class:`Codes`). Decoders with an
iSTFT head are trained against the input delayed by ``target_delay`` samples (see
:mod:`audiokit.nn.vocos`); the codec pads that many zeros after the input and drops that many
samples at the start of the decoder output, so users see aligned, exact-length audio.

Channels. A mono model codes each channel of a multichannel input as its own stream (channels are
folded into the batch); :class:`Codes` remembers the channel count and ``decode`` restores it.

Shapes. ``encode`` takes ``(samples,)``, ``(channels, samples)`` (as :func:`audiokit.io.load` gives it) or
``(batch, channels, samples)`` audio, as ``Enhancer.enhance`` and ``BandwidthExtender.extend`` do; the
codes are ``(batch * channels, n_q, frames)`` whatever the rank, and ``decode`` gives back audio of the
rank that was encoded (:attr:`Codes.audio_dims`), so ``decode(encode(wav))`` has ``wav``'s shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.errors import ModelError, UsageError
from audiokit.models.base import ANY_AUDIO_SHAPE, AudioModel, ModelConfig
from audiokit.nn import (
    CausalISTFTHead,
    ISTFTDecoder,
    SEANetDecoder,
    SEANetEncoder,
    STFTEncoder,
    StreamableConv1d,
    StreamableConvTranspose1d,
    StreamableLSTM,
)
from audiokit.quantize import ResidualVectorQuantizer, supported_bitrates
from audiokit.schema import KIND_FROM
from audiokit.streaming.codec import CodecStream


@dataclass
class SEANetConfig:
    """Options of a :class:`~audiokit.nn.SEANetEncoder` or :class:`~audiokit.nn.SEANetDecoder` (``seanet``).

    Widths double (encoder) or halve (decoder) from ``n_filters`` at each of the codec's ``ratios``;
    ``lstm_layers`` > 0 adds a causal LSTM (then the decoder's history is unbounded).
    """

    kind: ClassVar[str] = "seanet"
    n_filters: int = 32
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    activation: str = "elu"
    lstm_layers: int = 0
    norm: str = "weight_norm"


@dataclass
class STFTEncoderConfig:
    """Options of an :class:`~audiokit.nn.STFTEncoder` (kind ``stft``): causal STFT of ``n_fft`` samples
    every ``stft_hop``, ``n_blocks`` ConvNeXt blocks of width ``hidden_dim`` (MLP ``intermediate_dim``)."""

    kind: ClassVar[str] = "stft"
    n_fft: int = 480
    stft_hop: int = 160
    hidden_dim: int = 192
    intermediate_dim: int = 576
    n_blocks: int = 6
    kernel_size: int = 7
    compression: float = 0.3


@dataclass
class ISTFTDecoderConfig:
    """Options of an :class:`~audiokit.nn.ISTFTDecoder` (kind ``istft``): ``n_blocks`` ConvNeXt blocks of
    width ``hidden_dim`` (MLP ``intermediate_dim``), an iSTFT head of ``n_fft`` samples every
    ``istft_hop`` with an MLP of width ``head_hidden_dim`` beside its linear map (0: none)."""

    kind: ClassVar[str] = "istft"
    n_fft: int = 640
    istft_hop: int = 160
    hidden_dim: int = 256
    intermediate_dim: int = 768
    n_blocks: int = 8
    kernel_size: int = 7
    head_hidden_dim: int = 0


@dataclass
class CodecConfig(ModelConfig):
    """Everything that defines a codec architecture; stored as JSON beside the weights.

    ``encoder`` is a :class:`SEANetConfig` (``encoder_type="seanet"``) or a :class:`STFTEncoderConfig`
    (``encoder_type="stft"``); ``decoder`` a :class:`SEANetConfig` (``decoder_type="seanet"``) or an
    :class:`ISTFTDecoderConfig` (``decoder_type="istft"``). ``ratios`` (whose product is the hop length
    in samples) and ``causal`` apply to both sides. ``rate_conditioned``: the decoder's input latent is
    scaled and shifted per channel by learnt vectors of the number of codebooks it sums
    (:meth:`Codec.condition_latent`), so that one decoder can serve each bitrate as if trained for it.
    ``rate_decoders``: numbers of codebooks that have a decoder of their own (the same architecture as
    ``decoder``, trained for that bitrate alone; :meth:`Codec.decoder_for`); every other number uses
    ``decoder``. The codes do not depend on them, so files decode with or without them.
    The quantizer fields (``num_quantizers`` .. ``duplicate_distance``) are those of
    :class:`~audiokit.quantize.ResidualVectorQuantizer` (``quantizer_dropout_choices`` is its
    ``dropout_choices``); the last five only matter in training.
    """

    training_only: ClassVar[tuple[str, ...]] = (
        "quantizer_dropout",
        "quantizer_dropout_choices",
        "dead_code_threshold",
        "duplicate_cosine",
        "duplicate_distance",
    )

    causal: bool = True
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    latent_dim: int = 128
    encoder_type: str = "seanet"
    encoder: SEANetConfig | STFTEncoderConfig = field(
        default_factory=SEANetConfig, metadata={KIND_FROM: "encoder_type"}
    )
    decoder_type: str = "istft"
    decoder: SEANetConfig | ISTFTDecoderConfig = field(
        default_factory=ISTFTDecoderConfig, metadata={KIND_FROM: "decoder_type"}
    )
    rate_conditioned: bool = False
    rate_decoders: tuple[int, ...] = ()
    num_quantizers: int = 12
    codebook_size: int = 1024
    codebook_dim: int | None = 8
    l2_normalize: bool = True
    quantizer_ema: bool = True
    quantizer_dropout: float = 0.0
    quantizer_dropout_choices: tuple[int, ...] | None = None
    dead_code_threshold: float = 0.1
    duplicate_cosine: float = 0.0
    duplicate_distance: float = 0.0

    def __post_init__(self) -> None:
        self.ratios = tuple(self.ratios)
        self.rate_decoders = tuple(self.rate_decoders)
        increasing = list(self.rate_decoders) == sorted(set(self.rate_decoders))
        # (a num_quantizers < 1 is the quantizer's to refuse)
        if self.num_quantizers >= 1 and not (
            increasing and all(1 <= n <= self.num_quantizers for n in self.rate_decoders)
        ):
            raise ModelError(
                f"rate_decoders must be increasing numbers of codebooks in 1..num_quantizers "
                f"({self.num_quantizers}), got {list(self.rate_decoders)}"
            )
        if self.quantizer_dropout_choices is not None:
            self.quantizer_dropout_choices = tuple(self.quantizer_dropout_choices)
        for side in ("encoder", "decoder"):
            kind, options = getattr(self, f"{side}_type"), getattr(self, side)
            if getattr(options, "kind", None) != kind:
                raise ModelError(f"{side}_type is {kind!r} but {side} holds {type(options).__name__} options")
        if self.channels != 1:
            raise ModelError(
                f"channels={self.channels}: only mono models exist so far; they code each channel of a "
                "multichannel input as its own stream"
            )


CONFIGS: dict[str, CodecConfig] = {
    # 16 kHz mono speech, causal: 50 Hz frames, 12 x 1024 codes -> 0.5 .. 6 kbps in 0.5 kbps steps
    # (3 / 6 / 12 codebooks give 1.5 / 3 / 6 kbps). STFT encoder and iSTFT decoder (ConvNeXt at
    # 100 Hz): 2.6x fewer operations than a SEANet encoder, wide products that stream many streams
    # per core, and faster convergence on CPU budgets (docs/architecture.md); an MLP beside the iSTFT
    # head's linear map; Euclidean codeword lookup (docs/training.md, "Codebook health"); decoders of
    # their own for 1.5 and 3 kbps (version 4, docs/architecture.md). The shipped weights
    # (audiokit/weights/speech-16k) have exactly this config.
    "speech-16k": CodecConfig(
        name="speech-16k",
        sample_rate=16000,
        encoder_type="stft",
        encoder=STFTEncoderConfig(),
        decoder_type="istft",
        decoder=ISTFTDecoderConfig(
            n_fft=480, hidden_dim=192, intermediate_dim=576, n_blocks=6, head_hidden_dim=1024
        ),
        l2_normalize=False,
        quantizer_dropout=0.25,
        rate_decoders=(3, 6),
    ),
    # The same bitrates without the causality constraint (offline use only: no streaming).
    "speech-16k-noncausal": CodecConfig(
        name="speech-16k-noncausal",
        sample_rate=16000,
        causal=False,
        decoder_type="seanet",
        decoder=SEANetConfig(),
    ),
    # 24 kHz general audio (music, ambience, speech): 75 Hz frames, up to 24 x 1024 codes = 18 kbps.
    "general-24k": CodecConfig(
        name="general-24k",
        sample_rate=24000,
        encoder=SEANetConfig(lstm_layers=2),
        decoder_type="seanet",
        decoder=SEANetConfig(lstm_layers=2),
        num_quantizers=24,
    ),
}


@dataclass
class Codes:
    """Discrete codes of a batch of signals.

    ``codes``: int64 ``(batch * channels, n_q, frames)`` (channel ``c`` of item ``b`` is row
    ``b * channels + c``) whatever the rank of the encoded audio (``(samples,)`` gives one row,
    ``(channels, samples)`` one per channel); ``length``: samples per channel of the original signal;
    ``channels``: channel count of the original signal; ``audio_dims``: the rank of the original signal
    (1: ``(samples,)``, 2: ``(channels, samples)``, 3: ``(batch, channels, samples)``), the rank
    :meth:`Codec.decode` gives back.
    """

    codes: torch.Tensor
    length: int
    channels: int = 1
    audio_dims: int = 3

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[1]

    @property
    def frames(self) -> int:
        return self.codes.shape[2]


@dataclass
class CodecOutput:
    """Training-time output: ``audio`` ``(B, C, T)`` aligned with the input, codes, VQ losses, metrics."""

    audio: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def _stack_options(config: CodecConfig) -> dict[str, Any]:
    """The options an encoder and a decoder of ``config`` share."""
    return {"channels": config.channels, "dimension": config.latent_dim, "causal": config.causal}


class Codec(AudioModel, family="codec", config_class=CodecConfig, configs=CONFIGS):
    """A neural audio codec with the shared audiokit model interface (see DESIGN.md §3).

    Audio tensors are float32 ``(batch, channels, samples)`` at :attr:`sample_rate` Hz (:meth:`encode`
    also takes ``(samples,)`` and ``(channels, samples)``, and :meth:`decode` gives that rank back).
    """

    config: CodecConfig

    def __init__(self, config: CodecConfig) -> None:
        super().__init__(config)
        shared = _stack_options(config)
        # the STFT encoder and the iSTFT decoder take the hop length, the SEANet stacks its factors
        encoder = dataclasses.asdict(config.encoder)
        if config.encoder_type == "stft":
            self.encoder = STFTEncoder(**shared, hop_length=math.prod(config.ratios), **encoder)
        else:
            self.encoder = SEANetEncoder(**shared, ratios=config.ratios, **encoder)
        self.decoder = self._new_decoder(config)
        self.rate_decoders = nn.ModuleDict({str(n): self._new_decoder(config) for n in config.rate_decoders})
        self.quantizer = ResidualVectorQuantizer(
            config.latent_dim,
            config.num_quantizers,
            config.codebook_size,
            codebook_dim=config.codebook_dim,
            l2_normalize=config.l2_normalize,
            ema=config.quantizer_ema,
            quantizer_dropout=config.quantizer_dropout,
            dropout_choices=config.quantizer_dropout_choices,
            dead_code_threshold=config.dead_code_threshold,
            duplicate_cosine=config.duplicate_cosine,
            duplicate_distance=config.duplicate_distance,
        )
        if config.rate_conditioned:  # identity to start with: (1, 0) for every number of codebooks
            self.rate_scale = nn.Parameter(torch.ones(config.num_quantizers, config.latent_dim))
            self.rate_shift = nn.Parameter(torch.zeros(config.num_quantizers, config.latent_dim))

    @staticmethod
    def _new_decoder(config: CodecConfig) -> nn.Module:
        """A freshly initialised decoder of ``config``'s kind and options."""
        shared = _stack_options(config)
        options = dataclasses.asdict(config.decoder)
        if config.decoder_type == "istft":
            return ISTFTDecoder(**shared, hop_length=math.prod(config.ratios), **options)
        return SEANetDecoder(**shared, ratios=config.ratios, **options)

    # -- the shared interface -------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        """Code frames per second (Hz)."""
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def bitrates(self) -> list[float]:
        """Supported bitrates in bits per second, one per number of codebooks (1..num_codebooks)."""
        return supported_bitrates(self.frame_rate, self.codebook_size, self.num_codebooks)

    @property
    def target_delay(self) -> int:
        """Samples by which the decoder output lags the input (0 for SEANet decoders)."""
        return getattr(self.decoder, "target_delay", 0)

    @property
    def algorithmic_latency(self) -> int:
        """Samples from an input sample to the output sample it produces, in streaming use.

        A frame needs ``hop_length`` samples, plus the encoder's and decoder's look-ahead (0 when
        causal) and the iSTFT decoder's ``target_delay``.
        """
        return self.hop_length + self.encoder.lookahead + self.decoder.lookahead + self.target_delay

    def codes_sha256(self) -> str:
        """sha256 (hex) of everything that decides the codes :meth:`encode` writes: the encoder's and
        the quantizer's tensors, the config fields they are built from and :attr:`target_delay`.

        Two weights with the same value write the same codes for every input, so each decodes the
        other's files (a decoder trained on with the encoder and codebooks frozen keeps it)."""
        c = self.config
        fields = ("sample_rate", "channels", "causal", "ratios", "latent_dim", "encoder_type")
        fields += ("num_quantizers", "codebook_size", "codebook_dim", "l2_normalize")
        described = {name: getattr(c, name) for name in fields}
        described |= {"encoder": dataclasses.asdict(c.encoder), "target_delay": self.target_delay}
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            if name.startswith(("encoder.", "quantizer.")):
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def n_q_for_bitrate(self, bitrate: float | None) -> int:
        """Codebooks used at ``bitrate`` bits/s (all of them when ``None``)."""
        if bitrate is None:
            return self.num_codebooks
        return self.quantizer.n_q_for_bitrate(bitrate, self.frame_rate)

    # -- coding -----------------------------------------------------------------------------------
    def _fold(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3:
            raise ValueError(f"audio must be (batch, channels, samples), got {tuple(wav.shape)}")
        if wav.shape[-1] < 1:
            raise ValueError("audio must hold at least one sample")
        if self.channels == 1:
            return wav.reshape(-1, 1, wav.shape[-1])
        if wav.shape[1] != self.channels:
            raise ValueError(f"{self.name} codes {self.channels} channels, got {wav.shape[1]}")
        return wav

    def _latent(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.pad(wav, (0, self.target_delay)))

    def condition_latent(
        self, latent: torch.Tensor, n_q: int | torch.Tensor, time_major: bool = False
    ) -> torch.Tensor:
        """The decoder's input from quantized ``latent`` ``(B, dim, frames)`` (``(B, frames, dim)`` when
        ``time_major``) of ``n_q`` codebooks (an int, or int64 ``(B,)`` per row): ``latent * scale + shift``
        with the learnt per-channel vectors of ``n_q`` when the codec is ``rate_conditioned``, else
        ``latent`` itself. Element-wise: a streamed row's conditioned latent equals the offline one bit
        for bit."""
        if not self.config.rate_conditioned:
            return latent
        index = torch.as_tensor(n_q, device=latent.device).view(-1) - 1  # (1,) or (B,)
        scale, shift = self.rate_scale[index].unsqueeze(1), self.rate_shift[index].unsqueeze(1)  # (., 1, dim)
        if not time_major:
            scale, shift = scale.transpose(1, 2), shift.transpose(1, 2)
        return latent * scale + shift

    def decoder_for(self, n_q: int) -> nn.Module:
        """The decoder of audio coded with ``n_q`` codebooks: its own (``config.rate_decoders``) or the
        shared :attr:`decoder`."""
        return self.rate_decoders[str(n_q)] if str(n_q) in self.rate_decoders else self.decoder

    def _run_decoder(self, latent: torch.Tensor, n_q: int | torch.Tensor) -> torch.Tensor:
        """The decoders' audio ``(B, C, samples)`` of ``latent`` ``(B, dim, frames)`` summed from ``n_q``
        codebooks (an int, or int64 ``(B,)`` per row: each row goes through :meth:`decoder_for` its
        own number)."""
        if not self.rate_decoders:
            return self.decoder(latent)
        if isinstance(n_q, int):
            return self.decoder_for(n_q)(latent)
        rows = n_q.view(-1)
        own = torch.tensor([int(key) for key in self.rate_decoders], device=rows.device)
        groups = [(self.decoder, ~torch.isin(rows, own))]
        groups += [(decoder, rows == int(key)) for key, decoder in self.rate_decoders.items()]
        pieces, order = [], []
        for decoder, mask in groups:
            index = mask.nonzero().view(-1)
            if index.numel():
                pieces.append(decoder(latent[index]))
                order.append(index)
        return torch.cat(pieces)[torch.argsort(torch.cat(order))]

    def _synthesize(
        self, latent: torch.Tensor, length: int, channels: int, n_q: int | torch.Tensor
    ) -> torch.Tensor:
        audio = self._run_decoder(latent, n_q)[..., self.target_delay : self.target_delay + length]
        channels = channels if self.channels == 1 else self.channels
        return audio.reshape(audio.shape[0] * audio.shape[1] // channels, channels, length)  # length may be 0

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, bitrate: float | None = None) -> Codes:
        """Codes of float ``wav`` ``(samples,)``, ``(channels, samples)`` (as :func:`audiokit.io.load`
        returns it) or ``(batch, channels, samples)`` in [-1, 1] at :attr:`sample_rate` Hz (resample
        first), at ``bitrate`` bits/s (see :attr:`bitrates`; ``None``: every codebook). The codes are
        ``(batch * channels, n_q, frames)`` for every rank (one row for ``(samples,)``); :meth:`decode`
        gives back audio of ``wav``'s shape.

        Float64 (or float16) audio is converted to float32; integer PCM, numpy arrays, other ranks and
        NaN or infinite samples raise :class:`~audiokit.errors.UsageError`. Runs without autograd (the
        codes are integers: training calls :meth:`forward`)."""
        x = self.audio_input(wav, "Codec.encode", ANY_AUDIO_SHAPE, ndims=(1, 2, 3))
        batched = x.reshape((1,) * (3 - x.dim()) + x.shape)
        n_q = self.n_q_for_bitrate(bitrate)
        codes = self.quantizer.encode(self._latent(self._fold(batched)), n_q)
        return Codes(codes, x.shape[-1], batched.shape[1], x.dim())

    def decode(self, codes: Codes | torch.Tensor) -> torch.Tensor:
        """Float32 audio at :attr:`sample_rate` Hz from :class:`Codes`, of the shape given to
        :meth:`encode` (``(samples,)``, ``(channels, samples)`` or ``(batch, channels, samples)``), or
        from a raw integer tensor ``(rows, n_q, frames)`` as a ``"decode"`` session without a length
        gives it: ``(rows, 1, frames * hop_length - target_delay)`` (up to ``hop_length - 1`` samples
        past the original end).

        Codes outside ``0 .. codebook_size - 1`` raise :class:`~audiokit.errors.UsageError`. With autograd
        on, the audio is differentiable in the decoder's weights (tests train through it): call it under
        ``torch.inference_mode()`` (or ``.detach()`` the result) before ``.numpy()``.
        """
        codes = self._checked_codes(codes, "Codec.decode")
        n_q = codes.codes.shape[1]
        latent = self.condition_latent(self.quantizer.decode(codes.codes), n_q)
        audio = self._synthesize(latent, codes.length, codes.channels, n_q)
        return audio.reshape(audio.shape[3 - codes.audio_dims :])  # one item when audio_dims < 3

    @torch.no_grad()
    def decode_segment(self, codes: Codes, first_frame: int, start: int, length: int) -> torch.Tensor:
        """Audio samples ``[start, start + length)`` from codes of frames ``first_frame`` onwards, in
        the shape :meth:`decode` gives.

        ``codes.codes`` holds frames ``first_frame ..``; for a result equal to a full decode the frames
        must start at least :attr:`decoder_context_frames` before the one holding ``start`` (or at 0).
        Samples before 0, or that the frames do not cover, raise :class:`~audiokit.errors.UsageError`.
        """
        codes = self._checked_codes(codes, "Codec.decode_segment", check_length=False)
        offset = start - first_frame * self.hop_length + self.target_delay
        n_q = codes.codes.shape[1]
        audio = self.decoder_for(n_q)(self.condition_latent(self.quantizer.decode(codes.codes), n_q))
        if start < 0 or offset < 0 or offset + length > audio.shape[-1]:
            span = f"[{start}, {start + length})"
            raise UsageError(f"Codec.decode_segment: frames from {first_frame} do not cover samples {span}")
        audio = audio[..., offset : offset + length].reshape(-1, codes.channels, length)
        return audio.reshape(audio.shape[3 - codes.audio_dims :])

    def check_codes(self, codes: Any, where: str) -> torch.Tensor:
        """``codes`` as int64 ``(rows, n_q, frames)`` with ``1 <= n_q <=`` :attr:`num_codebooks` and every
        value in ``0 .. codebook_size - 1``, or :class:`~audiokit.errors.UsageError` naming the problem."""
        expected = (
            f"{where} takes integer (int64) codes (rows, n_q <= {self.num_codebooks}, frames) "
            f"in 0..{self.codebook_size - 1}"
        )
        self.check_float32()
        if not isinstance(codes, torch.Tensor):
            raise UsageError(
                f"{expected} (or Codes), got {type(codes).__module__}.{type(codes).__qualname__}"
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise UsageError(f"{expected}, got dtype {str(codes.dtype).removeprefix('torch.')}")
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_codebooks:
            raise UsageError(f"{expected}, got shape {tuple(codes.shape)}")
        codes = codes.long()
        if codes.numel() and bool(((codes < 0) | (codes >= self.codebook_size)).any()):
            low, high = int(codes.min()), int(codes.max())
            raise UsageError(f"{expected}, got values in {low}..{high}")
        return codes

    def _checked_codes(self, codes: Codes | torch.Tensor, where: str, check_length: bool = True) -> Codes:
        """:meth:`check_codes` of ``codes`` (:class:`Codes` or a raw tensor, see :meth:`decode`)."""
        raw = not isinstance(codes, Codes)
        checked = self.check_codes(codes if raw else codes.codes, where)
        frames = checked.shape[-1]
        if frames < 1:
            raise UsageError(f"{where}: the codes hold no frames, got shape {tuple(checked.shape)}")
        if raw:
            return Codes(checked, frames * self.hop_length - self.target_delay, self.channels)
        fold = codes.channels if self.channels == 1 else 1
        if codes.channels < 1 or checked.shape[0] % fold:
            raise UsageError(
                f"{where}: {checked.shape[0]} rows of codes do not hold {codes.channels} channels"
            )
        items = checked.shape[0] // fold
        fits = {3: True, 2: items == 1, 1: items == 1 and codes.channels == 1}
        if not fits.get(codes.audio_dims, False):
            raise UsageError(
                f"{where}: audio_dims is 3 (batch, channels, samples), 2 (channels, samples) for one item or "
                f"1 (samples,) for one mono item; got {codes.audio_dims!r} for {items} item(s) of "
                f"{codes.channels} channel(s)"
            )
        most = frames * self.hop_length - self.target_delay
        if check_length and not 1 <= codes.length <= most:
            raise UsageError(
                f"{where}: {frames} frames of codes give 1..{most} samples, but length is {codes.length}"
            )
        return dataclasses.replace(codes, codes=checked)

    def stream(
        self,
        batch_size: int = 1,
        mode: str = "roundtrip",
        bitrate: float | None = None,
        length: int | Sequence[int] | None = None,
        channels: int | None = None,
        compile: bool | str | None = False,
    ) -> CodecStream:
        """A streaming session (:class:`~audiokit.streaming.CodecStream`) of ``batch_size`` items.

        ``mode``: ``"encode"`` (audio -> codes), ``"decode"`` (codes -> audio; ``length``: samples to
        output per item, optional) or ``"roundtrip"`` (audio -> audio). ``session.push(chunk)`` returns
        what is ready, ``session.flush()`` the tail; the totals equal :meth:`encode` / :meth:`decode`.
        ``channels``: channels per item (default: the model's); ``compile``: ``True`` (``torch.compile``),
        ``"aoti"`` or ``"cuda_graph"`` (see :class:`~audiokit.streaming.CodecStream`).
        Raises :class:`ModelError` for a non-causal model.
        """
        return CodecStream(self, batch_size, mode, bitrate, length=length, channels=channels, compile=compile)

    @property
    def decoder_context_frames(self) -> int | None:
        """Frames of history the decoder reads, rounded up; ``None`` when unbounded (an LSTM).

        Each conv reading ``R`` samples at ``u`` times the frame rate adds ``(R - 1) / u`` frames; a
        transposed conv adds its ``kernel / stride`` frames; an iSTFT head its window overlap.
        """
        if any(isinstance(layer, StreamableLSTM) for layer in self.decoder.modules()):
            return None
        frames, rate = 1.0, 1
        for layer in self.decoder.modules():
            if isinstance(layer, StreamableConvTranspose1d):
                frames += layer.kernel_size / layer.stride / rate
                rate *= layer.stride
            elif isinstance(layer, StreamableConv1d):
                frames += (layer.receptive_field - 1) / rate
            elif isinstance(layer, CausalISTFTHead):
                frames += layer.n_fft / self.hop_length
        return math.ceil(frames)

    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """Training pass: quantize with straight-through gradients (codebook updates, dropout)."""
        folded = self._fold(wav)
        result = self.quantizer(self._latent(folded), n_q)
        latent = self.condition_latent(result.quantized, result.stages)
        audio = self._synthesize(latent, wav.shape[-1], wav.shape[1], result.stages)
        return CodecOutput(audio, result.codes, result.commitment_loss, result.codebook_loss, result.metrics)
