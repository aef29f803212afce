"""SEANet encoder and decoder (the EnCodec/DAC convolutional backbone), causal or not.

``ratios`` lists the up-sampling factors in decoder order (e.g. ``[8, 5, 4, 2]``, hop 320); the
encoder down-samples by the same factors in reverse order. ``hop_length = prod(ratios)``.

Lengths: the encoder maps ``(B, channels, T)`` to ``(B, dimension, ceil(T / hop_length))`` and the
decoder maps ``(B, dimension, N)`` to ``(B, channels, N * hop_length)``; a codec trims the decoder
output to ``T`` (see :mod:`audiokit.nn.conv`).

Latency. In causal mode encoder frame ``j`` depends only on input samples ``< (j + 1) * hop_length``
and decoder sample ``t`` only on frames ``<= t // hop_length``; non-causal stacks read ahead by
:attr:`SEANetEncoder.lookahead` input samples and :attr:`SEANetDecoder.lookahead` output samples.
A codec built from them has an algorithmic latency of ``hop_length + encoder.lookahead +
decoder.lookahead`` samples. LSTM layers are causal and do not change these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from audiokit.nn.activations import make_activation
from audiokit.nn.conv import StreamableConv1d, StreamableConvTranspose1d
from audiokit.nn.lstm import StreamableLSTM
from audiokit.nn.state import StateList
from audiokit.nn.streaming import StreamingModule, StreamingSequential


class ResidualUnit(nn.Module, StreamingModule):
    """``x + conv1x1(act(conv_k,d(act(x))))`` on ``(B, dim, T)``, length-preserving.

    The dilated conv has ``kernel_size`` taps ``dilation`` samples apart and ``dim // compress``
    output channels.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        dilation: int = 1,
        compress: int = 2,
        activation: str = "elu",
        causal: bool = False,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        hidden = dim // compress
        self.convs = nn.ModuleList(
            [
                StreamableConv1d(dim, hidden, kernel_size, dilation=dilation, causal=causal, norm=norm),
                StreamableConv1d(hidden, dim, 1, causal=causal, norm=norm),
            ]
        )
        self.block = StreamingSequential(
            make_activation(activation, dim),
            self.convs[0],
            make_activation(activation, hidden),
            self.convs[1],
        )

    @property
    def receptive_field(self) -> int:
        """Input samples that one output sample reads."""
        return 1 + sum(conv.receptive_field - 1 for conv in self.convs)

    @property
    def lookahead(self) -> int:
        """Future input samples that one output sample reads (0 when causal)."""
        return sum(conv.lookahead for conv in self.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return self.block.init_state(batch_size, device, dtype)

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        return x + self.block.step_t(x, state, final)


def _residual_stack(
    dim: int, n_units: int, kernel_size: int, dilation_base: int, **kwargs
) -> list[nn.Module]:
    return [ResidualUnit(dim, kernel_size, dilation=dilation_base**j, **kwargs) for j in range(n_units)]


class SEANetEncoder(nn.Module, StreamingModule):
    """Waveform -> latent frames: ``(B, channels, T) -> (B, dimension, ceil(T / hop_length))``.

    Conv (``kernel_size``) -> per ratio: ``n_residual_layers`` residual units (dilations
    ``dilation_base ** j``), activation, strided conv (kernel ``2 * ratio``) doubling the width ->
    optional causal LSTM -> activation -> conv (``last_kernel_size``) to ``dimension``.
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        ratios: Sequence[int] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        activation: str = "elu",
        lstm_layers: int = 0,
        causal: bool = True,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(ratios)
        self.hop_length = math.prod(self.ratios)
        common = {"causal": causal, "norm": norm}
        width = n_filters
        layers: list[nn.Module] = [StreamableConv1d(channels, width, kernel_size, **common)]
        for ratio in reversed(self.ratios):
            layers += _residual_stack(
                width,
                n_residual_layers,
                residual_kernel_size,
                dilation_base,
                compress=compress,
                activation=activation,
                **common,
            )
            layers += [
                make_activation(activation, width),
                StreamableConv1d(width, width * 2, 2 * ratio, stride=ratio, **common),
            ]
            width *= 2
        if lstm_layers:
            layers.append(StreamableLSTM(width, lstm_layers))
        layers += [
            make_activation(activation, width),
            StreamableConv1d(width, dimension, last_kernel_size, **common),
        ]
        self.model = StreamingSequential(*layers)

    @property
    def receptive_field(self) -> int:
        """Input samples that one frame's convolutions read (an LSTM, if any, reaches further back)."""
        field, step = 1, 1
        for layer in self.model:
            if isinstance(layer, (StreamableConv1d, ResidualUnit)):
                field += (layer.receptive_field - 1) * step
            step *= getattr(layer, "stride", 1)
        return field

    @property
    def lookahead(self) -> int:
        """Input samples past ``(j + 1) * hop_length - 1`` that frame ``j`` reads (0 when causal)."""
        ahead, step = 0, 1
        for layer in self.model:
            if isinstance(layer, (StreamableConv1d, ResidualUnit)):
                ahead += layer.lookahead * step
            step *= getattr(layer, "stride", 1)
        return ahead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return self.model.init_state(batch_size, device, dtype)

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        return self.model.step_t(x, state, final)


class SEANetDecoder(nn.Module, StreamingModule):
    """Latent frames -> waveform: ``(B, dimension, N) -> (B, channels, N * hop_length)``.

    Conv (``kernel_size``) -> optional causal LSTM -> per ratio: activation, transposed conv
    (kernel ``2 * ratio``) halving the width, ``n_residual_layers`` residual units -> activation ->
    conv (``last_kernel_size``) to ``channels``.
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        ratios: Sequence[int] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        activation: str = "elu",
        lstm_layers: int = 0,
        causal: bool = True,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(ratios)
        self.hop_length = math.prod(self.ratios)
        common = {"causal": causal, "norm": norm}
        width = n_filters * 2 ** len(self.ratios)
        layers: list[nn.Module] = [StreamableConv1d(dimension, width, kernel_size, **common)]
        if lstm_layers:
            layers.append(StreamableLSTM(width, lstm_layers))
        for ratio in self.ratios:
            layers += [
                make_activation(activation, width),
                StreamableConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio, **common),
            ]
            width //= 2
            layers += _residual_stack(
                width,
                n_residual_layers,
                residual_kernel_size,
                dilation_base,
                compress=compress,
                activation=activation,
                **common,
            )
        layers += [
            make_activation(activation, width),
            StreamableConv1d(width, channels, last_kernel_size, **common),
        ]
        self.model = StreamingSequential(*layers)

    @property
    def lookahead(self) -> int:
        """Output samples of look-ahead: sample ``t`` needs frames up to ``(t + lookahead) // hop_length``."""
        ahead, step = 0, 1
        for layer in reversed(self.model):
            if isinstance(layer, (StreamableConv1d, ResidualUnit, StreamableConvTranspose1d)):
                ahead += layer.lookahead * step
            if isinstance(layer, StreamableConvTranspose1d):
                step *= layer.stride
        return ahead

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return self.model.init_state(batch_size, device, dtype)

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        return self.model.step_t(x, state, final)
