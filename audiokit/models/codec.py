"""Neural audio codec: causal SEANet encoder, residual VQ, SEANet or iSTFT (Vocos-style) decoder.

Lengths. ``encode`` maps ``T`` samples to ``ceil((T + target_delay) / hop_length)`` frames and
``decode`` returns exactly ``T`` samples (the length travels in :class:`Codes`). Decoders with an
iSTFT head are trained against the input delayed by ``target_delay`` samples (see
:mod:`audiokit.nn.vocos`); the codec pads that many zeros after the input and drops that many
samples at the start of the decoder output, so users see aligned, exact-length audio.

Channels. A mono model codes each channel of a multichannel input as its own stream (channels are
folded into the batch); :class:`Codes` remembers the channel count and ``decode`` restores it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from audiokit.errors import ModelError
from audiokit.io import atomic_path
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
from audiokit.streaming import CodecStream

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT = "audiokit-codec"
FORMAT_VERSION = 1


@dataclass
class CodecConfig:
    """Everything that defines a codec architecture; stored as JSON beside the weights.

    ``encoder`` holds :class:`~audiokit.nn.SEANetEncoder` options (``encoder_type="seanet"``) or
    :class:`~audiokit.nn.STFTEncoder` options (``encoder_type="stft"``); ``decoder`` holds
    :class:`~audiokit.nn.SEANetDecoder` options (``decoder_type="seanet"``) or
    :class:`~audiokit.nn.ISTFTDecoder` options (``decoder_type="istft"``). ``ratios`` (whose product is
    the hop length in samples) and ``causal`` apply to both sides. The quantizer fields
    (``num_quantizers`` .. ``dead_code_threshold``) are those of
    :class:`~audiokit.quantize.ResidualVectorQuantizer`; the last two only matter in training.
    """

    name: str
    sample_rate: int
    channels: int = 1
    causal: bool = True
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    latent_dim: int = 128
    encoder_type: str = "seanet"
    encoder: dict = field(default_factory=dict)
    decoder_type: str = "istft"
    decoder: dict = field(default_factory=dict)
    num_quantizers: int = 12
    codebook_size: int = 1024
    codebook_dim: int | None = 8
    l2_normalize: bool = True
    quantizer_ema: bool = True
    quantizer_dropout: float = 0.0
    dead_code_threshold: float = 0.1

    def __post_init__(self) -> None:
        self.ratios = tuple(self.ratios)
        if self.encoder_type not in ("seanet", "stft"):
            raise ModelError(f"encoder_type must be 'seanet' or 'stft', got {self.encoder_type!r}")
        if self.decoder_type not in ("seanet", "istft"):
            raise ModelError(f"decoder_type must be 'seanet' or 'istft', got {self.decoder_type!r}")
        if self.channels != 1:
            raise ModelError(
                f"channels={self.channels}: only mono models exist so far; they code each channel of a "
                "multichannel input as its own stream"
            )

    def to_dict(self) -> dict:
        """JSON-serialisable form (``CodecConfig(**d)`` restores it)."""
        return dataclasses.asdict(self)


CONFIGS: dict[str, CodecConfig] = {
    # 16 kHz mono speech, causal: 50 Hz frames, 12 x 1024 codes -> 0.5 .. 6 kbps in 0.5 kbps steps
    # (3 / 6 / 12 codebooks give 1.5 / 3 / 6 kbps). STFT encoder and iSTFT decoder (ConvNeXt at
    # 100 Hz): 2.6x fewer operations than a SEANet encoder, wide products that stream many streams
    # per core, and faster convergence on CPU budgets (docs/architecture.md); an MLP beside the iSTFT
    # head's linear map; Euclidean codeword lookup (docs/training.md, "Codebook health"). The shipped
    # weights (audiokit/weights/speech-16k) have exactly this config.
    "speech-16k": CodecConfig(
        name="speech-16k",
        sample_rate=16000,
        encoder_type="stft",
        encoder={"n_fft": 480, "stft_hop": 160, "hidden_dim": 192, "intermediate_dim": 576, "n_blocks": 6},
        decoder_type="istft",
        decoder={
            "n_fft": 480,
            "istft_hop": 160,
            "hidden_dim": 192,
            "intermediate_dim": 576,
            "n_blocks": 6,
            "head_hidden_dim": 1024,
        },
        l2_normalize=False,
        quantizer_dropout=0.25,
    ),
    # The same bitrates without the causality constraint (offline use only: no streaming).
    "speech-16k-noncausal": CodecConfig(
        name="speech-16k-noncausal",
        sample_rate=16000,
        causal=False,
        encoder={"n_filters": 32, "n_residual_layers": 1},
        decoder_type="seanet",
        decoder={"n_filters": 32, "n_residual_layers": 1},
    ),
    # 24 kHz general audio (music, ambience, speech): 75 Hz frames, up to 24 x 1024 codes = 18 kbps.
    "general-24k": CodecConfig(
        name="general-24k",
        sample_rate=24000,
        ratios=(8, 5, 4, 2),
        encoder={"n_filters": 32, "n_residual_layers": 1, "lstm_layers": 2},
        decoder_type="seanet",
        decoder={"n_filters": 32, "n_residual_layers": 1, "lstm_layers": 2},
        num_quantizers=24,
    ),
}


@dataclass
class Codes:
    """Discrete codes of a batch of signals.

    ``codes``: int64 ``(batch * channels, n_q, frames)`` (channel ``c`` of item ``b`` is row
    ``b * channels + c``); ``length``: samples per channel of the original signal; ``channels``:
    channel count of the original signal.
    """

    codes: torch.Tensor
    length: int
    channels: int = 1

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


class Codec(nn.Module):
    """A neural audio codec with the shared audiokit model interface (see DESIGN.md §3).

    Audio tensors are float32 ``(batch, channels, samples)`` at :attr:`sample_rate` Hz.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        shared = {"channels": config.channels, "dimension": config.latent_dim, "causal": config.causal}
        # the STFT encoder and the iSTFT decoder take the hop length, the SEANet stacks its factors
        hop = {"hop_length": math.prod(config.ratios)}
        ratios = {"ratios": config.ratios}
        if config.encoder_type == "stft":
            self.encoder = STFTEncoder(**shared, **hop, **config.encoder)
        else:
            self.encoder = SEANetEncoder(**shared, **ratios, **config.encoder)
        if config.decoder_type == "istft":
            self.decoder = ISTFTDecoder(**shared, **hop, **config.decoder)
        else:
            self.decoder = SEANetDecoder(**shared, **ratios, **config.decoder)
        self.quantizer = ResidualVectorQuantizer(
            config.latent_dim,
            config.num_quantizers,
            config.codebook_size,
            codebook_dim=config.codebook_dim,
            l2_normalize=config.l2_normalize,
            ema=config.quantizer_ema,
            quantizer_dropout=config.quantizer_dropout,
            dead_code_threshold=config.dead_code_threshold,
        )

    # -- the shared interface -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

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

    def _synthesize(self, latent: torch.Tensor, length: int, channels: int) -> torch.Tensor:
        audio = self.decoder(latent)[..., self.target_delay : self.target_delay + length]
        return audio.reshape(-1, channels if self.channels == 1 else self.channels, length)

    def encode(self, wav: torch.Tensor, bitrate: float | None = None) -> Codes:
        """Codes of ``(B, C, T)`` audio at ``bitrate`` bits/s (see :attr:`bitrates`; None: all)."""
        n_q = self.n_q_for_bitrate(bitrate)
        folded = self._fold(wav)
        codes = self.quantizer.encode(self._latent(folded), n_q)
        return Codes(codes, wav.shape[-1], wav.shape[1])

    def decode(self, codes: Codes) -> torch.Tensor:
        """Audio ``(B, C, T)`` from :class:`Codes`; ``T`` and ``C`` are those given to :meth:`encode`."""
        return self._synthesize(self.quantizer.decode(codes.codes), codes.length, codes.channels)

    def decode_segment(self, codes: Codes, first_frame: int, start: int, length: int) -> torch.Tensor:
        """Audio samples ``[start, start + length)`` from codes of frames ``first_frame`` onwards.

        ``codes.codes`` holds frames ``first_frame ..``; for a result equal to a full decode the frames
        must start at least :attr:`decoder_context_frames` before the one holding ``start`` (or at 0).
        """
        offset = start - first_frame * self.hop_length + self.target_delay
        audio = self.decoder(self.quantizer.decode(codes.codes))
        if offset < 0 or offset + length > audio.shape[-1]:
            raise ValueError(f"frames from {first_frame} do not cover samples [{start}, {start + length})")
        return audio[..., offset : offset + length].reshape(-1, codes.channels, length)

    def stream(
        self,
        batch_size: int = 1,
        mode: str = "roundtrip",
        bitrate: float | None = None,
        length: int | Sequence[int] | None = None,
        channels: int | None = None,
        compile: bool = False,
    ) -> CodecStream:
        """A streaming session (:class:`~audiokit.streaming.CodecStream`) of ``batch_size`` items.

        ``mode``: ``"encode"`` (audio -> codes), ``"decode"`` (codes -> audio; ``length``: samples to
        output per item, optional) or ``"roundtrip"`` (audio -> audio). ``session.push(chunk)`` returns
        what is ready, ``session.flush()`` the tail; the totals equal :meth:`encode` / :meth:`decode`.
        ``channels``: channels per item (default: the model's); ``compile``: use ``torch.compile``.
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
        audio = self._synthesize(result.quantized, wav.shape[-1], wav.shape[1])
        return CodecOutput(audio, result.codes, result.commitment_loss, result.codebook_loss, result.metrics)

    # -- weights ----------------------------------------------------------------------------------
    def weights_sha256(self) -> str:
        """sha256 (hex) of the model's weights serialised as safetensors: identifies the weights."""
        return hashlib.sha256(safetensors.torch.save(_contiguous_state(self))).hexdigest()

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``path`` (``.safetensors``) and its JSON config beside it (``.json``), atomically."""
        path = Path(path).with_suffix(".safetensors")
        blob = safetensors.torch.save(_contiguous_state(self))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "sha256": hashlib.sha256(blob).hexdigest(),
            **(extra or {}),
        }
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_config(cls, name: str, **overrides) -> Codec:
        """An untrained codec of the registered config ``name``, with field overrides."""
        if name not in CONFIGS:
            raise ModelError(f"unknown codec config {name!r}; choose one of {', '.join(CONFIGS)}")
        return cls(dataclasses.replace(CONFIGS[name], **overrides))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> Codec:
        """Load shipped weights by name (``"speech-16k"``) or a ``.safetensors`` path with its ``.json``.

        The weights file's sha256 must match the one recorded in the JSON; nothing is unpickled.
        """
        path = _resolve_weights(name_or_path)
        config_path = path.with_suffix(".json")
        if not config_path.is_file():
            raise ModelError(f"{config_path}: config not found beside the weights")
        try:
            meta = json.loads(config_path.read_text())
            config = CodecConfig(**meta["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{config_path}: not an audiokit codec config ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(
                f"{config_path}: unsupported format {meta.get('format')!r} v{meta.get('format_version')}"
            )
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            raise ModelError(
                f"{path}: sha256 does not match {config_path.name}; the file is corrupt or replaced"
            )
        model = cls(config)
        try:
            model.load_state_dict(safetensors.torch.load(blob), strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"{path}: weights do not fit config {config.name!r} ({str(exc)[:200]})"
            ) from None
        return model.eval()


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def is_shipped(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names shipped weights: a model name, or a file in ``audiokit/weights``."""
    if str(name_or_path) in CONFIGS:
        return True
    path = Path(name_or_path)
    folder = path if path.is_dir() else path.parent
    return folder.resolve() == WEIGHTS_DIR.resolve()


def _resolve_weights(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text in CONFIGS:
        path = WEIGHTS_DIR / f"{text}.safetensors"
        if not path.is_file():
            raise ModelError(
                f"no shipped weights for {text!r} in {WEIGHTS_DIR}; train them with `audiokit train` "
                "or give a path to a .safetensors file"
            )
        return path
    path = Path(text)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise ModelError(f"{path}: expected exactly one .safetensors file, found {len(candidates)}")
        path = candidates[0]
    if not path.is_file():
        known = ", ".join(CONFIGS)
        raise ModelError(f"{path}: no such model file, and not a known model name ({known})")
    return path
