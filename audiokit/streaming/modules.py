"""The :class:`StreamingModule` contract and the streaming steps of the :mod:`audiokit.nn` blocks.

A streaming module is the chunk-by-chunk twin of one ``nn.Module``: :meth:`StreamingModule.init_state`
makes its typed state (see :mod:`audiokit.streaming.state`) for a batch of streams and
:meth:`StreamingModule.step` maps the next chunk ``(B, C, n)`` to the next output chunk, updating the
state. :func:`as_streaming` builds one for a model by dispatching on the module types; a module type
it does not know, or a non-causal conv (which reads the future), is a :class:`ModelError`.

Chunk rules (they make streaming equal offline, see :mod:`audiokit.nn.conv`): a conv of stride ``s``
must receive a multiple of ``s`` samples, except in the ``final`` step, where it pads its input with
``(-n) % s`` zeros exactly as the offline forward pads the end of the signal. A causal transposed conv
or iSTFT head maps ``n`` frames to ``n * stride`` final samples and carries the rest as overlap; what
is still in the overlap at the end is what the offline forward trims, so ``final`` changes nothing
there. Convs use the (weight-normalised) weights as they were when the streaming module was built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.errors import ModelError
from audiokit.nn import (
    CausalISTFTHead,
    ConvNeXtBlock,
    ISTFTDecoder,
    ResidualUnit,
    SEANetDecoder,
    SEANetEncoder,
    Snake,
    StreamableConv1d,
    StreamableConvTranspose1d,
    StreamableLSTM,
)
from audiokit.streaming.state import (
    ConvState,
    ConvTransposeState,
    LSTMState,
    OverlapAddState,
    StateList,
    StreamState,
)


class StreamingModule(ABC):
    """Chunk-by-chunk twin of an ``nn.Module``: the same output, one chunk at a time."""

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StreamState | None:
        """The state before the first sample of ``batch_size`` streams (all zeros); ``None`` if stateless."""
        return None

    @abstractmethod
    def step(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """Output for the next chunk ``x (B, C, n)``; updates ``state`` (reassigns its tensors).

        ``final=True`` marks the last chunk of the streams (it may be shorter than a stride).
        """


class PointwiseStep(StreamingModule):
    """A module acting on each time step on its own (activations): no state."""

    def __init__(self, module: nn.Module) -> None:
        self.forward = module.forward  # the module's own function, without the hook machinery

    def step(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        return self.forward(x)


def _require_causal(module: nn.Module, name: str) -> None:
    if not module.causal:
        raise ModelError(
            f"cannot stream {name or 'the model'}: it is a non-causal {type(module).__name__} reading "
            f"{module.lookahead} future samples; build the model with causal=True to stream it"
        )


class ConvStep(StreamingModule):
    """Causal :class:`~audiokit.nn.StreamableConv1d`; state: the last ``history_length`` input samples."""

    def __init__(self, module: StreamableConv1d, name: str = "") -> None:
        _require_causal(module, name)
        conv = module.conv
        self.weight = conv.weight.detach()
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.in_channels = conv.in_channels
        self.stride = module.stride
        self.dilation = module.dilation
        self.groups = conv.groups
        self.history_length = module.history_length
        self.name = name

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        if not self.history_length:
            return None
        return ConvState(
            torch.zeros(batch_size, self.in_channels, self.history_length, device=device, dtype=dtype)
        )

    def step(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        extra = (-x.shape[-1]) % self.stride
        if extra:
            if not final:
                raise ValueError(
                    f"{self.name or 'conv'}: a streaming chunk of {x.shape[-1]} samples is not a multiple of "
                    f"the stride {self.stride} (only the final chunk may be)"
                )
            x = F.pad(x, (0, extra))
        if state is not None:
            x = torch.cat([state.history, x], -1)
            state.history = x[..., x.shape[-1] - self.history_length :]
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvTransposeStep(StreamingModule):
    """Causal :class:`~audiokit.nn.StreamableConvTranspose1d`; state: the bias-free output overlap."""

    def __init__(self, module: StreamableConvTranspose1d, name: str = "") -> None:
        _require_causal(module, name)
        convtr = module.convtr
        self.weight = convtr.weight.detach()
        self.bias = None if convtr.bias is None else convtr.bias.detach()[:, None]
        self.out_channels = convtr.out_channels
        self.stride = module.stride
        self.groups = convtr.groups
        self.overlap_length = module.overlap_length

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> ConvTransposeState | None:
        if not self.overlap_length:
            return None
        shape = (batch_size, self.out_channels, self.overlap_length)
        return ConvTransposeState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvTransposeState | None, final: bool = False) -> torch.Tensor:
        y = F.conv_transpose1d(x, self.weight, None, self.stride, groups=self.groups)
        ready = x.shape[-1] * self.stride
        if state is not None:
            y[..., : self.overlap_length] += state.overlap
            state.overlap = y[..., ready:]
        out = y[..., :ready]
        return out if self.bias is None else out + self.bias


class LSTMStep(StreamingModule):
    """:class:`~audiokit.nn.StreamableLSTM`; state: ``(h, c)``."""

    def __init__(self, module: StreamableLSTM, name: str = "") -> None:
        self.lstm = module.lstm
        self.skip = module.skip

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        return LSTMState(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    def step(self, x: torch.Tensor, state: LSTMState, final: bool = False) -> torch.Tensor:
        y, (state.h, state.c) = self.lstm(x.transpose(1, 2), (state.h, state.c))
        y = y.transpose(1, 2)
        return x + y if self.skip else y


class SequentialStep(StreamingModule):
    """Children applied in order; state: a :class:`StateList` of theirs."""

    def __init__(self, modules: list[nn.Module], name: str = "") -> None:
        self.steps = [as_streaming(m, f"{name}.{i}" if name else str(i)) for i, m in enumerate(modules)]

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return StateList([s.init_state(batch_size, device, dtype) for s in self.steps])

    def step(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        for sub, sub_state in zip(self.steps, state.children, strict=True):
            x = sub.step(x, sub_state, final)
        return x


class ResidualStep(SequentialStep):
    """:class:`~audiokit.nn.ResidualUnit`: ``x + block(x)``."""

    def __init__(self, module: ResidualUnit, name: str = "") -> None:
        super().__init__(list(module.block), f"{name}.block" if name else "block")

    def step(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        return x + super().step(x, state, final)


class ConvNeXtStep(StreamingModule):
    """:class:`~audiokit.nn.ConvNeXtBlock`: a causal depthwise conv, then per-frame layers."""

    def __init__(self, module: ConvNeXtBlock, name: str = "") -> None:
        self.module = module
        self.dwconv = ConvStep(module.dwconv, f"{name}.dwconv")

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        return self.dwconv.init_state(batch_size, device, dtype)

    def step(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        m = self.module
        y = self.dwconv.step(x, state, final).transpose(1, 2)
        y = F.layer_norm(y, m.norm.normalized_shape, m.norm.weight, m.norm.bias, m.norm.eps)
        y = F.linear(
            m.act.forward(F.linear(y, m.pwconv1.weight, m.pwconv1.bias)), m.pwconv2.weight, m.pwconv2.bias
        )
        return x + (m.gamma * y).transpose(1, 2)


class ISTFTHeadStep(StreamingModule):
    """:class:`~audiokit.nn.CausalISTFTHead`; state: the overlap-add tail."""

    def __init__(self, module: CausalISTFTHead, name: str = "") -> None:
        self.head = module
        self.samples_per_frame = module.frames_per_step * module.hop_length

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> OverlapAddState:
        shape = (batch_size, self.head.channels, self.head.overlap_length)
        return OverlapAddState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: OverlapAddState, final: bool = False) -> torch.Tensor:
        wav = self.head.synthesize(self.head.spectrogram(x))
        ready = x.shape[-1] * self.samples_per_frame
        wav[..., : self.head.overlap_length] += state.tail
        state.tail = wav[..., ready:]
        return wav[..., :ready]


def _layer_norm_channels(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    y = F.layer_norm(x.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return y.transpose(1, 2)


class ISTFTDecoderStep(StreamingModule):
    """:class:`~audiokit.nn.ISTFTDecoder`: embedding conv, ConvNeXt blocks, iSTFT head."""

    def __init__(self, module: ISTFTDecoder, name: str = "") -> None:
        prefix = f"{name}." if name else ""
        self.module = module
        self.embed = ConvStep(module.embed, f"{prefix}embed")
        self.blocks = [ConvNeXtStep(b, f"{prefix}blocks.{i}") for i, b in enumerate(module.blocks)]
        self.head = ISTFTHeadStep(module.head, f"{prefix}head")

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        parts = [self.embed, *self.blocks, self.head]
        return StateList([p.init_state(batch_size, device, dtype) for p in parts])

    def step(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        states = state.children
        x = _layer_norm_channels(self.module.embed_norm, self.embed.step(x, states[0], final))
        for i, block in enumerate(self.blocks):
            x = block.step(x, states[1 + i], final)
        x = _layer_norm_channels(self.module.final_norm, x)
        return self.head.step(x, states[-1], final)


def _seanet(module: SEANetEncoder | SEANetDecoder, name: str) -> SequentialStep:
    return SequentialStep(list(module.model), f"{name}.model" if name else "model")


POINTWISE = (nn.ELU, nn.GELU, nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Identity, Snake)
ADAPTERS = {
    StreamableConv1d: ConvStep,
    StreamableConvTranspose1d: ConvTransposeStep,
    StreamableLSTM: LSTMStep,
    ResidualUnit: ResidualStep,
    ConvNeXtBlock: ConvNeXtStep,
    CausalISTFTHead: ISTFTHeadStep,
    ISTFTDecoder: ISTFTDecoderStep,
    SEANetEncoder: _seanet,
    SEANetDecoder: _seanet,
    nn.Sequential: lambda module, name: SequentialStep(list(module), name),
}


def as_streaming(module: nn.Module, name: str = "") -> StreamingModule:
    """The streaming twin of ``module`` (``name``: its path, for error messages).

    Raises :class:`ModelError` for a module type without a streaming step or a non-causal conv.
    """
    kind = type(module)
    if kind in POINTWISE:
        return PointwiseStep(module)
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        known = ", ".join(sorted(k.__name__ for k in (*ADAPTERS, *POINTWISE)))
        raise ModelError(
            f"cannot stream {name or 'the model'}: {kind.__name__} has no streaming step (supported: {known})"
        )
    return adapter(module, name)
