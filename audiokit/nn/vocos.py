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

import torch
from torch import nn

from audiokit.dsp import get_window
from audiokit.nn.conv import StreamableConv1d


def overlap_add(segments: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Overlap-add ``(N, M, n_fft)`` segments placed ``hop_length`` apart: ``(N, M * hop + n_fft - hop)``.

    ``n_fft`` must be a multiple of ``hop_length``: the sum is then ``n_fft // hop_length`` shifted
    slice additions, which is much faster than ``F.fold`` for many rows (and exact either way).
    """
    rows, frames, n_fft = segments.shape
    parts = n_fft // hop_length
    pieces = segments.view(rows, frames, parts, hop_length)
    out = segments.new_zeros(rows, frames + parts - 1, hop_length)
    for j in range(parts):
        out[:, j : j + frames] += pieces[:, :, j]
    return out.view(rows, -1)


class ConvNeXtBlock(nn.Module):
    """``x + gamma * W2(GELU(W1(LayerNorm(depthwise_conv(x)))))`` on ``(B, dim, T)``, length-preserving."""

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
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class CausalISTFTHead(nn.Module):
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

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Complex STFT frames ``(B, channels, n_fft // 2 + 1, N * frames_per_step)`` for features ``x``."""
        batch, _, frames = x.shape
        x = x.transpose(1, 2)
        y = self.proj(x) if self.mlp is None else self.proj(x) + self.mlp(x)
        y = y.reshape(batch, frames, self.frames_per_step, self.channels, 2, self.n_bins)
        y = y.permute(0, 3, 4, 5, 1, 2).reshape(
            batch, self.channels, 2, self.n_bins, frames * self.frames_per_step
        )
        y = y.float()  # torch.polar has no bf16 kernel (CUDA autocast gives bf16 here)
        magnitude = y[:, :, 0].clamp(max=self.max_log_magnitude).exp()
        return torch.polar(magnitude, y[:, :, 1])

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Causal-layout inverse STFT ``(B, C, n_fft // 2 + 1, M) -> (B, C, M * hop_length + overlap)``.

        The first ``M * hop_length`` samples are final; the last ``overlap = n_fft - hop_length`` are the
        overlap-add tail.
        """
        batch, channels, _, frames = spec.shape
        segments = torch.fft.irfft(spec.transpose(2, 3), n=self.n_fft, dim=-1) * self.synthesis_window
        out = overlap_add(segments.reshape(batch * channels, frames, self.n_fft), self.hop_length)
        return out.view(batch, channels, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wav = self.synthesize(self.spectrogram(x))
        return wav[..., : wav.shape[-1] - self.overlap_length]


class ISTFTDecoder(nn.Module):
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
        x = self.embed_norm(self.embed(z).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.head(x)
