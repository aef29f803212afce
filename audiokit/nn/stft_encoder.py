"""STFT encoder: the mirror of the Vocos-style decoder, a causal STFT and a ConvNeXt backbone.

Frames. STFT frame ``m`` (hop ``stft_hop``, window ``n_fft``) covers samples
``[(m + 1) stft_hop - n_fft, (m + 1) stft_hop)``, zeros before the signal ("causal layout"), so it
needs nothing past the end of its own hop. ``T`` samples give ``ceil(T / stft_hop)`` STFT frames
(the last one zero-padded), and a causal strided conv of stride ``r = hop_length // stft_hop`` turns
``M`` of them into ``ceil(M / r) = ceil(T / hop_length)`` latent frames.

Features. Each frame's complex spectrum ``X`` is power-law compressed,
``X |X|^(compression - 1)``, which keeps the phase and squeezes the level range (as in speech
enhancement front ends), and its real and imaginary parts go through a linear layer.

Why not SEANet. A SEANet encoder spends most of its operations in narrow convs at the full sample
rate (for ``speech-16k`` with 24 filters: 7.7 M multiply-adds per 20 ms frame, mostly in 24- and
48-channel layers); this one works at ``stft_hop`` resolution with wide matrix products
(about 3 M multiply-adds per 20 ms frame with 6 blocks of width 192), which is what streaming many
streams per core needs, and it trains faster per CPU-second.

Streaming state: the last ``n_fft - stft_hop`` input samples, the ConvNeXt blocks' conv history
and the strided conv's history. In evaluation mode the offline forward runs the streaming step's
arithmetic (see :mod:`audiokit.nn.streaming`), so streamed latents are bit-identical to offline ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.dsp import get_window
from audiokit.nn.conv import StreamableConv1d
from audiokit.nn.state import ConvState, StateList
from audiokit.nn.streaming import (
    LinearWeights,
    StreamingModule,
    layer_norm_t,
    linear_t,
    linear_weights,
    stride_padding,
)
from audiokit.nn.vocos import ConvNeXtBlock


class CausalSTFT(nn.Module, StreamingModule):
    """Compressed causal STFT features: ``(B, C, T) -> (B, ceil(T / hop_length), C * 2 * (n_fft // 2 + 1))``.

    Output is time-major; per frame the features are ordered (channel, real/imag, bin). Streaming
    state: the last ``n_fft - hop_length`` input samples (:class:`ConvState`); a chunk of
    ``n * hop_length`` samples gives ``n`` frames, and the final chunk is zero-padded to whole hops as
    the offline forward pads the end of the signal.
    """

    def __init__(
        self,
        channels: int = 1,
        n_fft: int = 480,
        hop_length: int = 160,
        window: str = "hann",
        compression: float = 0.3,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if n_fft < hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be at least hop_length ({hop_length})")
        self.channels = channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.compression = compression
        self.eps = eps
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("window", get_window(window, n_fft), persistent=False)

    @property
    def history_length(self) -> int:
        """Input samples a streaming step keeps from the past: ``n_fft - hop_length``."""
        return self.n_fft - self.hop_length

    @property
    def num_features(self) -> int:
        return self.channels * 2 * self.n_bins

    def features(self, segments: torch.Tensor) -> torch.Tensor:
        """Segments ``(B, C, M, n_fft)`` -> features ``(B, M, C * 2 * n_bins)``.

        The compression's power is taken in float64 and rounded: in float32 the vectorised loop and
        its scalar remainder round it differently, so a frame's features would depend on where it
        falls in the tensor (and streamed features would differ from offline ones).
        """
        batch, channels, frames, _ = segments.shape
        spec = torch.fft.rfft(segments.float() * self.window, dim=-1)  # (B, C, M, bins)
        power = spec.real.square() + spec.imag.square()
        spec = spec * (power + self.eps).double().pow((self.compression - 1) / 2).float()
        parts = torch.view_as_real(spec).permute(0, 2, 1, 4, 3)  # (B, M, C, 2, bins)
        return parts.reshape(batch, frames, channels * 2 * self.n_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.history_length, (-x.shape[-1]) % self.hop_length))
        return self.features(x.unfold(-1, self.n_fft, self.hop_length))

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        shape = (batch_size, self.channels, self.history_length)
        return ConvState(torch.zeros(shape, device=device, dtype=dtype))

    def step_t(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        """Time-major audio ``(B, n, C)`` -> features ``(B, ceil(n / hop_length), features)``."""
        extra = stride_padding(x.shape[1], self.hop_length, final, "hop")
        if not x.shape[1]:  # no new samples: no frames, the history stays
            return x.new_zeros(x.shape[0], 0, self.num_features)
        x = x.transpose(1, 2)
        x = torch.cat([state.history, F.pad(x, (0, extra)) if extra else x], -1)
        state.history = x[..., x.shape[-1] - self.history_length :]
        return self.features(x.unfold(-1, self.n_fft, self.hop_length))


class STFTEncoder(nn.Module, StreamingModule):
    """Waveform -> latent frames: ``(B, channels, T) -> (B, dimension, ceil(T / hop_length))``.

    :class:`CausalSTFT` -> Linear to ``hidden_dim`` -> LayerNorm -> ``n_blocks`` ConvNeXt blocks ->
    LayerNorm -> strided conv (kernel ``2 r``, stride ``r = hop_length // stft_hop``) to ``dimension``.
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        hop_length: int = 320,
        n_fft: int = 480,
        stft_hop: int = 160,
        hidden_dim: int = 192,
        intermediate_dim: int = 576,
        n_blocks: int = 6,
        kernel_size: int = 7,
        compression: float = 0.3,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if hop_length % stft_hop:
            raise ValueError(f"hop_length ({hop_length}) must be a multiple of stft_hop ({stft_hop})")
        self.channels = channels
        self.dimension = dimension
        self.hop_length = hop_length
        self.stft_hop = stft_hop
        ratio = hop_length // stft_hop
        self.stft = CausalSTFT(channels, n_fft, stft_hop, compression=compression)
        self.proj = nn.Linear(self.stft.num_features, hidden_dim)
        self.proj_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            [
                ConvNeXtBlock(
                    hidden_dim, intermediate_dim, kernel_size, layer_scale=1.0 / n_blocks, causal=causal
                )
                for _ in range(n_blocks)
            ]
        )
        self.final_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.downsample = StreamableConv1d(
            hidden_dim, dimension, 2 * ratio, stride=ratio, causal=causal, norm="none"
        )

    @property
    def lookahead(self) -> int:
        """Input samples past ``(j + 1) * hop_length - 1`` that frame ``j`` reads (0 when causal)."""
        frames = sum(block.lookahead for block in self.blocks) + self.downsample.lookahead
        return frames * self.stft_hop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_norm_t(linear_t(self.stft(x), self.current_weights()), self.proj_norm)
        for block in self.blocks:
            y = block.forward_t(y)
        return self.downsample.forward_t(layer_norm_t(y, self.final_norm)).transpose(1, 2)

    def prepare_weights(self) -> LinearWeights:
        """The input projection's weights."""
        return linear_weights(self.proj)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        self.prepare()
        parts = [self.stft, *self.blocks, self.downsample]
        return StateList([part.init_state(batch_size, device, dtype) for part in parts])

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        """Time-major audio ``(B, n, C)`` -> latent frames ``(B, frames, dimension)``."""
        states = state.children
        features = self.stft.step_t(x, states[0], final)
        y = layer_norm_t(linear_t(features, self.prepared()), self.proj_norm)
        for block, block_state in zip(self.blocks, states[1:-1], strict=True):
            y = block.step_t(y, block_state, final)
        return self.downsample.step_t(layer_norm_t(y, self.final_norm), states[-1], final)
