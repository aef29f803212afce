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

Layout. Inside a model step, activations are time-major ``(B, n, C)`` (:meth:`StreamingModule.step_t`):
a conv is then one ``unfold`` of ``[history | x]`` and one ``addmm`` with a weight matrix prepared
once, and Linear / LayerNorm layers need no transposes. :meth:`StreamingModule.step` is the
channel-major ``(B, C, n)`` entry point; each module implements one of the two, the other converts.
States keep their documented channel-major shapes (a conv history is a transposed view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiokit import ops
from audiokit.errors import ModelError
from audiokit.nn import (
    CausalISTFTHead,
    CausalSTFT,
    ConvNeXtBlock,
    ISTFTDecoder,
    ResidualUnit,
    SEANetDecoder,
    SEANetEncoder,
    Snake,
    STFTEncoder,
    StreamableConv1d,
    StreamableConvTranspose1d,
    StreamableLSTM,
)
from audiokit.nn.vocos import overlap_add
from audiokit.streaming.state import (
    ConvState,
    ConvTransposeState,
    LSTMState,
    OverlapAddState,
    StateList,
    StreamState,
)


class StreamingModule:
    """Chunk-by-chunk twin of an ``nn.Module``: the same output, one chunk at a time.

    Subclasses implement :meth:`step` or :meth:`step_t` (the other one transposes around it).
    """

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StreamState | None:
        """The state before the first sample of ``batch_size`` streams (all zeros); ``None`` if stateless."""
        return None

    def step(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """Output for the next chunk ``x (B, C, n)``; updates ``state`` (reassigns its tensors).

        ``final=True`` marks the last chunk of the streams (it may be shorter than a stride).
        """
        return self.step_t(x.transpose(1, 2), state, final).transpose(1, 2)

    def step_t(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        """:meth:`step` on time-major ``x (B, n, C)``, returning time-major output."""
        return self.step(x.transpose(1, 2), state, final).transpose(1, 2)


class PointwiseStep(StreamingModule):
    """A module acting on each time step on its own (activations): no state."""

    def __init__(self, module: nn.Module) -> None:
        self.forward = module.forward  # the module's own function, without the hook machinery
        self.per_channel = isinstance(module, Snake)  # parameters along the channel axis of (B, C, n)

    def step(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        return self.forward(x)

    def step_t(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        if self.per_channel:
            return self.forward(x.transpose(1, 2)).transpose(1, 2)
        return self.forward(x)


def _require_causal(module: nn.Module, name: str) -> None:
    if not module.causal:
        raise ModelError(
            f"cannot stream {name or 'the model'}: it is a non-causal {type(module).__name__} reading "
            f"{module.lookahead} future samples; build the model with causal=True to stream it"
        )


class ConvStep(StreamingModule):
    """Causal :class:`~audiokit.nn.StreamableConv1d`; state: the last ``history_length`` input samples.

    Time-major, on ``[history | x]`` of shape ``(B, T, C_in)``. For several streams, when the kernel
    is ``m`` strides long (no dilation) and the chunk long enough, time is grouped into blocks of
    ``stride`` samples, ``(B * T / s, s * C_in)`` rows, and the conv is ``m`` products of shifted row
    ranges with ``(s * C_in, C_out)`` matrices accumulated in one output (rows that straddle two
    streams are computed and dropped); this avoids copying the windows. Otherwise the
    ``(B, L, K, C_in)`` windows are copied out and multiplied by a ``(K * C_in, C_out)`` matrix. A
    depthwise conv is the ``(B, L, C, K)`` windows times ``(C, K)`` summed over ``K``.
    """

    def __init__(self, module: StreamableConv1d, name: str = "") -> None:
        _require_causal(module, name)
        conv = module.conv
        self.weight = conv.weight.detach()  # weight norm is evaluated once, here
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size[0]
        self.stride = module.stride
        self.dilation = module.dilation
        self.groups = conv.groups
        self.span = (self.kernel_size - 1) * self.dilation + 1
        self.history_length = module.history_length
        self.name = name
        self.depthwise = self.groups == self.in_channels == self.out_channels and self.groups > 1
        self.block_taps = self.kernel_size // self.stride
        self.block_matrices: list[torch.Tensor] | None = None
        if self.groups == 1:
            # (K * C_in, C_out), rows ordered (k, c); stored as its contiguous transpose, which reads
            # faster in the one-row products of a single stream
            self.matrix = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1).contiguous().t()
            # shifted blocks need rows of some width to beat copying the windows (measured)
            wide = self.stride * self.in_channels >= 8
            if self.dilation == 1 and self.kernel_size % self.stride == 0 and wide:
                per_block = self.matrix.t().reshape(self.out_channels, self.block_taps, -1)
                self.block_matrices = [m.contiguous() for m in per_block.unbind(1)]  # (C_out, s * C_in)
        elif self.depthwise:
            self.taps = self.weight[:, 0].contiguous()  # (C, K)
            self.taps_by_k = list(self.taps.t().contiguous())  # K rows of (C,)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        if not self.history_length:
            return None
        return ConvState(
            torch.zeros(batch_size, self.in_channels, self.history_length, device=device, dtype=dtype)
        )

    def _pad_end(self, x: torch.Tensor, final: bool, axis: int) -> torch.Tensor:
        extra = (-x.shape[axis]) % self.stride
        if not extra:
            return x
        if not final:
            raise ValueError(
                f"{self.name or 'conv'}: a streaming chunk of {x.shape[axis]} samples is not a multiple of "
                f"the stride {self.stride} (only the final chunk may be)"
            )
        return F.pad(x, (0, extra) if axis == -1 else (0, 0, 0, extra))

    def step(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        if self.groups == 1 or self.depthwise:
            return super().step(x, state, final)
        x = self._pad_end(x, final, -1)
        if state is not None:
            x = torch.cat([state.history, x], -1)
            state.history = x[..., x.shape[-1] - self.history_length :]
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def step_t(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        if not (self.groups == 1 or self.depthwise):
            return super().step_t(x, state, final)
        x = self._pad_end(x, final, 1)
        if state is not None:
            x = torch.cat([state.history.transpose(1, 2), x], 1)
            state.history = x[:, x.shape[1] - self.history_length :].transpose(1, 2)
        batch = x.shape[0]
        if self.block_matrices is not None:
            frames = (x.shape[1] - self.history_length) // self.stride
            if batch > 1 and frames >= 2 * (self.block_taps - 1):  # measured: one stream is faster below
                return self._blocked(x, batch, frames)
        if self.depthwise and batch > 1:  # measured: shifted products beat copied windows from 2 streams
            return self._depthwise_shifted(x)
        if self.span == 1 and self.stride == 1:
            windows = x  # (B, L, C_in)
        else:
            windows = x.unfold(1, self.span, self.stride)  # (B, L, C_in, span)
            if self.dilation > 1:
                windows = windows[..., :: self.dilation]
        if self.depthwise:
            y = (windows * self.taps).sum(-1)
            return y if self.bias is None else y + self.bias
        if windows.dim() == 4:
            windows = windows.transpose(2, 3)
        rows = windows.reshape(-1, self.matrix.shape[0])
        if self.bias is None:
            y = torch.mm(rows, self.matrix)
        else:
            y = torch.addmm(self.bias, rows, self.matrix)
        return y.view(batch, -1, self.out_channels)

    def _depthwise_shifted(self, x: torch.Tensor) -> torch.Tensor:
        """The depthwise conv of ``x (B, T, C)`` as ``K`` products of shifted slices with per-tap rows."""
        frames = (x.shape[1] - self.span) // self.stride + 1
        if frames <= 0:
            return x.new_zeros(x.shape[0], 0, self.out_channels)
        end = (frames - 1) * self.stride + 1
        y = None
        for k, tap in enumerate(self.taps_by_k):
            start = k * self.dilation
            piece = x[:, start : start + end : self.stride]
            if y is None:
                y = piece * tap if self.bias is None else torch.addcmul(self.bias, piece, tap)
            else:
                y.addcmul_(piece, tap)
        return y

    def _blocked(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """The conv of ``x (B, T, C_in)`` as products of shifted blocks of ``stride`` samples."""
        blocks = x.shape[1] // self.stride
        rows = x.reshape(batch * blocks, -1)
        valid = rows.shape[0] - (self.block_taps - 1)
        out = rows.new_empty(rows.shape[0], self.out_channels)
        head = out[:valid]
        first = self.block_matrices[0].t()
        if self.bias is None:
            torch.mm(rows[:valid], first, out=head)
        else:
            torch.addmm(self.bias, rows[:valid], first, out=head)
        for j in range(1, self.block_taps):
            head.addmm_(rows[j : j + valid], self.block_matrices[j].t())
        return out.view(batch, blocks, self.out_channels)[:, :frames]


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

    def step_t(self, x: torch.Tensor, state: LSTMState, final: bool = False) -> torch.Tensor:
        y, (state.h, state.c) = self.lstm(x, (state.h, state.c))
        return x + y if self.skip else y


class SequentialStep(StreamingModule):
    """Children applied in order; state: a :class:`StateList` of theirs."""

    def __init__(self, modules: list[nn.Module], name: str = "") -> None:
        self.steps = [as_streaming(m, f"{name}.{i}" if name else str(i)) for i, m in enumerate(modules)]

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        return StateList([s.init_state(batch_size, device, dtype) for s in self.steps])

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        for sub, sub_state in zip(self.steps, state.children, strict=True):
            x = sub.step_t(x, sub_state, final)
        return x


class ResidualStep(SequentialStep):
    """:class:`~audiokit.nn.ResidualUnit`: ``x + block(x)``."""

    def __init__(self, module: ResidualUnit, name: str = "") -> None:
        super().__init__(list(module.block), f"{name}.block" if name else "block")

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        return x + super().step_t(x, state, final)


def _linear(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W^T (in, out), bias)`` of ``layer``, for ``addmm`` on rows."""
    return layer.weight.detach().t(), None if layer.bias is None else layer.bias.detach()


def _apply_linear(x: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """``x (..., in) @ W^T + b`` as one ``mm`` / ``addmm`` on the rows of ``x``."""
    matrix, bias = params
    rows = x.reshape(-1, matrix.shape[0])
    y = torch.mm(rows, matrix) if bias is None else torch.addmm(bias, rows, matrix)
    return y.view(*x.shape[:-1], matrix.shape[1])


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` over the last axis of time-major ``x``."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class ConvNeXtStep(StreamingModule):
    """:class:`~audiokit.nn.ConvNeXtBlock`: a causal depthwise conv, then per-frame layers.

    Where :func:`audiokit.ops.backend_for` offers a fused kernel (Triton on a GPU), the conv and the
    LayerNorm run as one :func:`audiokit.ops.dwconv_layernorm_update` that updates the conv state in
    place.
    """

    def __init__(self, module: ConvNeXtBlock, name: str = "") -> None:
        self.module = module
        self.dwconv = ConvStep(module.dwconv, f"{name}.dwconv")
        self.pwconv1 = _linear(module.pwconv1)
        conv = self.dwconv
        # the fused kernel's assumptions: stride 1, no dilation, K - 1 frames of history
        self.fusable = conv.depthwise and conv.stride == conv.dilation == 1
        self.fusable &= conv.history_length == conv.kernel_size - 1
        gamma = module.gamma.detach()
        matrix, bias = _linear(module.pwconv2)
        self.pwconv2 = (matrix * gamma, bias * gamma)  # layer scale folded into the last product

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        return self.dwconv.init_state(batch_size, device, dtype)

    def step_t(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        m = self.module
        if self.fusable and state is not None and ops.backend_for(x) != "torch":  # one kernel, state in place
            conv = self.dwconv
            history = state.history.transpose(1, 2)
            y = ops.dwconv_layernorm_update(
                x, history, conv.taps, conv.bias, m.norm.weight, m.norm.bias, m.norm.eps
            )
        else:
            y = _layer_norm(self.dwconv.step_t(x, state, final), m.norm)
        y = _apply_linear(m.act.forward(_apply_linear(y, self.pwconv1)), self.pwconv2)
        return y.add_(x)


class ISTFTHeadStep(StreamingModule):
    """:class:`~audiokit.nn.CausalISTFTHead`; state: the overlap-add tail.

    The projection, magnitude/phase and inverse FFT run on time-major frames; the overlap-add is
    :func:`~audiokit.nn.vocos.overlap_add`, as offline.
    """

    def __init__(self, module: CausalISTFTHead, name: str = "") -> None:
        self.head = module
        self.samples_per_frame = module.frames_per_step * module.hop_length
        self.proj = _linear(module.proj)
        self.mlp = None if module.mlp is None else (_linear(module.mlp[0]), _linear(module.mlp[2]))
        self.window = module.synthesis_window.detach()

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> OverlapAddState:
        shape = (batch_size, self.head.channels, self.head.overlap_length)
        return OverlapAddState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: OverlapAddState, final: bool = False) -> torch.Tensor:
        return self._overlap_add(self.head.synthesize(self.head.spectrogram(x)), x.shape[-1], state)

    def step_t(self, x: torch.Tensor, state: OverlapAddState, final: bool = False) -> torch.Tensor:
        """Frames ``(B, n, dim)`` -> audio ``(B, n * samples_per_frame, channels)``."""
        head = self.head
        batch, frames, _ = x.shape
        steps = frames * head.frames_per_step
        y = _apply_linear(x, self.proj)
        if self.mlp is not None:
            hidden, output = self.mlp
            y += _apply_linear(F.gelu(_apply_linear(x, hidden)), output)
        y = y.view(batch, steps, head.channels, 2, head.n_bins).float()
        magnitude = y[:, :, :, 0].clamp(max=head.max_log_magnitude).exp()
        spec = torch.polar(magnitude, y[:, :, :, 1])  # (B, M, C, bins)
        segments = torch.fft.irfft(spec, n=head.n_fft, dim=-1) * self.window  # (B, M, C, n_fft)
        segments = segments.transpose(1, 2).reshape(batch * head.channels, steps, head.n_fft)
        wav = overlap_add(segments, head.hop_length).view(batch, head.channels, -1)
        return self._overlap_add(wav, frames, state).transpose(1, 2)

    def _overlap_add(self, wav: torch.Tensor, frames: int, state: OverlapAddState) -> torch.Tensor:
        ready = frames * self.samples_per_frame
        wav[..., : self.head.overlap_length] += state.tail
        state.tail = wav[..., ready:]
        return wav[..., :ready]


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

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        states = state.children
        x = _layer_norm(self.embed.step_t(x, states[0], final), self.module.embed_norm)
        for i, block in enumerate(self.blocks):
            x = block.step_t(x, states[1 + i], final)
        x = _layer_norm(x, self.module.final_norm)
        return self.head.step_t(x, states[-1], final)


class CausalSTFTStep(StreamingModule):
    """:class:`~audiokit.nn.CausalSTFT`; state: the last ``n_fft - hop_length`` input samples.

    A chunk of ``n * hop_length`` samples gives ``n`` frames; the final chunk is zero-padded to whole
    hops, as the offline forward pads the end of the signal.
    """

    def __init__(self, module: CausalSTFT, name: str = "") -> None:
        self.stft = module
        self.name = name

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState:
        shape = (batch_size, self.stft.channels, self.stft.history_length)
        return ConvState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        """Audio ``(B, C, n)`` -> time-major features ``(B, n // hop_length, features)``."""
        hop = self.stft.hop_length
        extra = (-x.shape[-1]) % hop
        if extra and not final:
            raise ValueError(
                f"{self.name or 'stft'}: a streaming chunk of {x.shape[-1]} samples is not a multiple of "
                f"the hop {hop} (only the final chunk may be)"
            )
        x = torch.cat([state.history, F.pad(x, (0, extra))], -1)
        state.history = x[..., x.shape[-1] - self.stft.history_length :]
        return self.stft.features(x.unfold(-1, self.stft.n_fft, hop))

    def step_t(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        return self.step(x.transpose(1, 2), state, final)


class STFTEncoderStep(StreamingModule):
    """:class:`~audiokit.nn.STFTEncoder`: STFT features, ConvNeXt blocks, strided conv."""

    def __init__(self, module: STFTEncoder, name: str = "") -> None:
        prefix = f"{name}." if name else ""
        self.module = module
        self.stft = CausalSTFTStep(module.stft, f"{prefix}stft")
        self.proj = _linear(module.proj)
        self.blocks = [ConvNeXtStep(b, f"{prefix}blocks.{i}") for i, b in enumerate(module.blocks)]
        self.downsample = ConvStep(module.downsample, f"{prefix}downsample")

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> StateList:
        parts = [self.stft, *self.blocks, self.downsample]
        return StateList([p.init_state(batch_size, device, dtype) for p in parts])

    def step_t(self, x: torch.Tensor, state: StateList, final: bool = False) -> torch.Tensor:
        """Audio ``(B, n, C)`` -> latent frames ``(B, frames, dimension)``."""
        states = state.children
        y = _layer_norm(
            _apply_linear(self.stft.step_t(x, states[0], final), self.proj), self.module.proj_norm
        )
        for i, block in enumerate(self.blocks):
            y = block.step_t(y, states[1 + i], final)
        y = _layer_norm(y, self.module.final_norm)
        return self.downsample.step_t(y, states[-1], final)


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
    CausalSTFT: CausalSTFTStep,
    STFTEncoder: STFTEncoderStep,
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
