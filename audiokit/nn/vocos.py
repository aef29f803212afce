"""Vocos-style decoder: a ConvNeXt backbone at the latent frame rate and an inverse-STFT head.

Frames. Latent frame ``j`` covers samples ``[j H, (j + 1) H)`` with ``H = hop_length``; the head turns
it into ``r = H // istft_hop`` STFT frames of magnitude and phase, and STFT frame ``m`` is inverse
transformed, windowed and overlap-added at samples ``[m istft_hop, m istft_hop + n_fft)`` ("causal
layout"). Output sample ``t`` therefore depends only on latent frames ``<= t // H`` (plus the
backbone's :attr:`ISTFTDecoder.lookahead`, 0 when causal), and ``N`` frames give ``N * H`` final
samples.

Streaming state: the backbone's conv history (``kernel_size - 1`` frames per depthwise conv) and the
head's overlap-add tail of ``n_fft - istft_hop`` samples (:attr:`CausalISTFTHead.overlap_length`).

Latency. The window of STFT frame ``m`` reaches ``n_fft - istft_hop`` samples past the end of its
hop; for every window to lie inside audio its latent frame has already seen, a codec should train
the decoder against its input delayed by :attr:`ISTFTDecoder.target_delay` ``= n_fft - istft_hop``
samples. Its algorithmic latency is then ``hop_length + encoder lookahead + target_delay`` (e.g.
``320 + 0 + 480`` samples = 50 ms at 16 kHz with ``n_fft = 640, istft_hop = 160``). A smaller
``n_fft`` lowers it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from audiokit import ops
from audiokit.dsp import get_window, overlap_add
from audiokit.nn.conv import ConvWeights, StreamableConv1d
from audiokit.nn.state import ConvState, OverlapAddState, StateList
from audiokit.nn.streaming import (
    LinearWeights,
    StreamingModule,
    layer_norm_t,
    linear_t,
    linear_weights,
)


class BlockWeights(NamedTuple):
    """What a :class:`ConvNeXtBlock` multiplies with: its two linear layers (the second scaled by
    ``gamma``), and the :mod:`audiokit.ops` backend its steps run on (``"torch"``: its own ops)."""

    pw1: LinearWeights
    pw2: LinearWeights
    backend: str


class ConvNeXtBlock(nn.Module, StreamingModule):
    """``x + gamma * W2(GELU(W1(LayerNorm(depthwise_conv(x)))))`` on ``(B, dim, T)``, length-preserving.

    Time-major inside (``forward_t`` / ``step_t`` on ``(B, T, dim)``), with the layer scale ``gamma``
    folded into ``W2``. Streaming state: the depthwise conv's. Where :func:`audiokit.ops.backend_for`
    offers a fused kernel, a step runs the whole block as one :func:`audiokit.ops.convnext_block_step`,
    which updates the conv state in place: on a GPU (CUDA, else Triton), and on the CPU (C++, opt-in),
    where an evaluation ``forward`` runs it too (from a zero state), so that streamed rows equal offline
    rows bit for bit.
    """

    def __init__(
        self,
        dim: int,
        intermediate_dim: int,
        kernel_size: int = 7,
        layer_scale: float = 0.1,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = StreamableConv1d(dim, dim, kernel_size, groups=dim, causal=causal, norm="none")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    @property
    def lookahead(self) -> int:
        """Future frames that one output frame reads (0 when causal)."""
        return self.dwconv.lookahead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_t(x.transpose(1, 2)).transpose(1, 2)

    def forward_t(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on time-major ``(B, T, dim)``."""
        weights = self.current_weights()
        if weights.backend == "cpp" and not torch.is_grad_enabled():
            history = x.new_zeros(x.shape[0], self.dwconv.history_length, x.shape[2])
            return self._fused(x, history, self.dwconv.current_weights(), weights)
        return self._mlp(layer_norm_t(self.dwconv.forward_t(x), self.norm), x, weights)

    def prepare_weights(self) -> BlockWeights:
        conv = self.dwconv
        fusable = conv.causal and conv.depthwise and conv.stride == conv.dilation == 1
        return BlockWeights(
            linear_weights(self.pwconv1),
            linear_weights(self.pwconv2, self.gamma),
            ops.backend_for(self.gamma) if fusable else "torch",
        )

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        self.prepare()
        return self.dwconv.init_state(batch_size, device, dtype)

    def step_t(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        if not x.shape[1]:  # no new frames: nothing out, the conv history stays
            return x.new_zeros(x.shape)
        weights, conv = self.prepared(), self.dwconv
        if weights.backend != "torch":  # the whole block as one op, state updated in place
            history = x[:, :0] if state is None else state.history.transpose(1, 2)  # no history: K = 1
            return self._fused(x, history, conv.prepared(), weights)
        return self._mlp(layer_norm_t(conv.step_t(x, state, final), self.norm), x, weights)

    def _fused(
        self, x: torch.Tensor, history: torch.Tensor, conv: ConvWeights, weights: BlockWeights
    ) -> torch.Tensor:
        """The block as one :func:`audiokit.ops.convnext_block_step` from conv ``history (B, K - 1, dim)``."""
        return ops.convnext_block_step(
            x.contiguous(), history, conv.taps, conv.bias, self.norm.weight, self.norm.bias, self.norm.eps,
            *weights.pw1, *weights.pw2, self.act.approximate, backend=weights.backend,
        )  # fmt: skip

    def _mlp(self, y: torch.Tensor, x: torch.Tensor, weights: BlockWeights) -> torch.Tensor:
        """``x + gamma * W2(GELU(W1 y))`` on time-major rows."""
        out = linear_t(self.act.forward(linear_t(y, weights.pw1)), weights.pw2)
        return out.add_(x) if not torch.is_grad_enabled() else out + x


class CausalISTFTHead(nn.Module, StreamingModule):
    """Frame features -> audio by inverse STFT: ``(B, dim, N) -> (B, channels, N * r * hop_length)``.

    ``r = frames_per_step``.

    Each input frame is mapped linearly to ``frames_per_step`` STFT frames of log-magnitude and phase
    per channel (magnitude ``exp`` clamped at ``max_magnitude``); with ``hidden_dim > 0`` a one-hidden-
    layer GELU MLP of that width is added to the linear map (its output layer starts at zero), so the
    ``2 * (n_fft // 2 + 1)`` values per frame are no longer limited to rank ``dim``. Frames are inverse
    transformed, multiplied by the synthesis window and overlap-added in the causal layout. The synthesis
    window is ``w[p] / sum_i w[p mod hop + i hop]**2``, so a true STFT taken with analysis window
    ``w`` (``n_fft = k * hop_length``, ``k >= 2``) is inverted exactly once ``n_fft - hop_length``
    samples have passed.

    Time-major inside: :meth:`spectrogram` maps frames ``(B, N, dim)`` to STFT frames and
    :meth:`synthesize` overlap-adds them. Streaming state: the overlap-add tail (:class:`OverlapAddState`).
    """

    def __init__(
        self,
        dim: int,
        channels: int = 1,
        n_fft: int = 640,
        hop_length: int = 160,
        frames_per_step: int = 1,
        window: str = "hann",
        max_magnitude: float = 100.0,
        hidden_dim: int = 0,
    ) -> None:
        super().__init__()
        if n_fft % hop_length or n_fft < 2 * hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple k >= 2 of hop_length ({hop_length})")
        self.channels = channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.frames_per_step = frames_per_step
        self.max_log_magnitude = float(torch.tensor(max_magnitude).log())
        self.n_bins = n_fft // 2 + 1
        outputs = frames_per_step * channels * 2 * self.n_bins
        self.proj = nn.Linear(dim, outputs)
        self.mlp = None
        if hidden_dim > 0:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, outputs))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        analysis = get_window(window, n_fft)
        envelope = analysis.square().reshape(-1, hop_length).sum(0)
        self.register_buffer(
            "synthesis_window", analysis / envelope.repeat(n_fft // hop_length), persistent=False
        )

    @property
    def overlap_length(self) -> int:
        """Samples of overlap-add tail a streaming step carries to the next chunk: ``n_fft - hop_length``."""
        return self.n_fft - self.hop_length

    @property
    def samples_per_frame(self) -> int:
        """Output samples per input frame: ``frames_per_step * hop_length``."""
        return self.frames_per_step * self.hop_length

    def prepare_weights(self) -> list[LinearWeights]:
        """The linear map's weights side by side with the MLP's hidden layer's (both read the input),
        then the MLP's output layer's (if there is an MLP)."""
        if self.mlp is None:
            return [linear_weights(self.proj)]
        (w_proj, b_proj), (w_hidden, b_hidden) = linear_weights(self.proj), linear_weights(self.mlp[0])
        first = (torch.cat([w_proj, w_hidden], 1), torch.cat([b_proj, b_hidden]))
        return [first, linear_weights(self.mlp[2])]

    def spectrogram(self, x: torch.Tensor, weights: list[LinearWeights] | None = None) -> torch.Tensor:
        """Complex STFT frames ``(B, N * frames_per_step, channels, n_fft // 2 + 1)`` of time-major
        features ``x (B, N, dim)`` (``weights``: from :meth:`prepare_weights`, prepared now if ``None``)."""
        batch, frames, _ = x.shape
        weights = self.current_weights() if weights is None else weights
        y = linear_t(x, weights[0])
        if self.mlp is not None:
            outputs = self.proj.out_features
            y = y[..., :outputs] + linear_t(self.mlp[1].forward(y[..., outputs:]), weights[1])
        y = y.view(batch, frames * self.frames_per_step, self.channels, 2, self.n_bins)
        y = y.float()  # torch.polar has no bf16 kernel (CUDA autocast gives bf16 here)
        magnitude = y[:, :, :, 0].clamp(max=self.max_log_magnitude).exp()
        return torch.polar(magnitude, y[:, :, :, 1])

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Causal-layout inverse STFT ``(B, M, C, n_fft // 2 + 1) -> (B, C, M * hop_length + overlap)``.

        The first ``M * hop_length`` samples are final; the last ``overlap = n_fft - hop_length`` are the
        overlap-add tail.
        """
        batch, frames, channels, _ = spec.shape
        segments = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.synthesis_window  # (B, M, C, n_fft)
        segments = segments.transpose(1, 2).reshape(batch * channels, frames, self.n_fft)
        return overlap_add(segments, self.hop_length).view(batch, channels, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_t(x.transpose(1, 2)).transpose(1, 2)

    def forward_t(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, N, dim)`` -> time-major audio ``(B, N * samples_per_frame, channels)``."""
        wav = self.synthesize(self.spectrogram(x))
        return wav[..., : wav.shape[-1] - self.overlap_length].transpose(1, 2)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> OverlapAddState:
        self.prepare()
        shape = (batch_size, self.channels, self.overlap_length)
        return OverlapAddState(torch.zeros(shape, device=device, dtype=dtype))

    def step_t(self, x: torch.Tensor, state: OverlapAddState, final: bool = False) -> torch.Tensor:
        """Frames ``(B, n, dim)`` -> audio ``(B, n * samples_per_frame, channels)``."""
        if not x.shape[1]:  # no new frames: no samples, the tail stays
            return x.new_zeros(x.shape[0], 0, self.channels)
        wav = self.synthesize(self.spectrogram(x, self.prepared()))
        ready = x.shape[1] * self.samples_per_frame
        wav[..., : self.overlap_length] += state.tail
        state.tail = wav[..., ready:]
        return wav[..., :ready].transpose(1, 2)


class ISTFTDecoder(nn.Module, StreamingModule):
    """Latent frames -> waveform: ``(B, dimension, N) -> (B, channels, N * hop_length)``.

    Conv (``kernel_size``) to ``hidden_dim`` -> LayerNorm -> ``n_blocks`` ConvNeXt blocks -> LayerNorm
    -> :class:`CausalISTFTHead` with ``hop_length // istft_hop`` STFT frames per latent frame (and an
    MLP of width ``head_hidden_dim`` beside its linear map when that is > 0).
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        hop_length: int = 320,
        n_fft: int = 640,
        istft_hop: int = 160,
        hidden_dim: int = 256,
        intermediate_dim: int = 768,
        n_blocks: int = 8,
        kernel_size: int = 7,
        causal: bool = True,
        head_hidden_dim: int = 0,
    ) -> None:
        super().__init__()
        if hop_length % istft_hop:
            raise ValueError(f"hop_length ({hop_length}) must be a multiple of istft_hop ({istft_hop})")
        self.channels = channels
        self.dimension = dimension
        self.hop_length = hop_length
        self.target_delay = n_fft - istft_hop
        self.embed = StreamableConv1d(dimension, hidden_dim, kernel_size, causal=causal, norm="none")
        self.embed_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            [
                ConvNeXtBlock(
                    hidden_dim, intermediate_dim, kernel_size, layer_scale=1.0 / n_blocks, causal=causal
                )
                for _ in range(n_blocks)
            ]
        )
        self.final_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.head = CausalISTFTHead(
            hidden_dim, channels, n_fft, istft_hop, hop_length // istft_hop, hidden_dim=head_hidden_dim
        )

    @property
    def lookahead(self) -> int:
        """Output samples of look-ahead: sample ``t`` needs frames up to ``(t + lookahead) // hop_length``."""
        frames = self.embed.lookahead + sum(block.lookahead for block in self.blocks)
        return frames * self.hop_length

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_t(z.transpose(1, 2)).transpose(1, 2)

    def forward_t(self, z: torch.Tensor) -> torch.Tensor:
        """Time-major latents ``(B, N, dimension)`` -> audio ``(B, N * hop_length, channels)``."""
        x = layer_norm_t(self.embed.forward_t(z), self.embed_norm)
        for block in self.blocks:
            x = block.forward_t(x)
        return self.head.forward_t(layer_norm_t(x, self.final_norm))

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        parts = [self.embed, *self.blocks, self.head]
        return StateList([part.init_state(batch_size, device, dtype) for part in parts])

    def step_t(self, z: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        """Latent frames ``(B, n, dimension)`` -> audio ``(B, n * hop_length, channels)``."""
        states = state.children
        x = layer_norm_t(self.embed.step_t(z, states[0], final), self.embed_norm)
        for block, block_state in zip(self.blocks, states[1:-1], strict=True):
            x = block.step_t(x, block_state, final)
        return self.head.step_t(layer_norm_t(x, self.final_norm), states[-1], final)
