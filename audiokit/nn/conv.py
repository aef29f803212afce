"""1-D convolution and transposed convolution with exact output lengths and streamable padding.

Lengths. Let ``K = (kernel_size - 1) * dilation + 1`` (effective kernel) and ``s = stride``.
:class:`StreamableConv1d` pads ``K - s`` samples in total (all on the left when causal, split
``ceil / floor`` left / right otherwise) plus ``(-T) % s`` zeros on the right, so ``T`` samples give
exactly ``ceil(T / s)`` frames. :class:`StreamableConvTranspose1d` trims ``kernel_size - s`` samples
of its ``(N - 1) * s + kernel_size`` outputs (all on the right when causal), so ``N`` frames give
exactly ``N * s`` samples. Chained, an encoder with total stride ``H`` maps ``T`` samples to
``ceil(T / H)`` frames and the mirrored decoder maps those back to ``ceil(T / H) * H >= T`` samples;
the caller trims to ``T``.

Streaming (causal mode). Output frame ``j`` of a causal conv reads input ``[j s - (K - s), (j + 1) s)``:
its state is the last ``K - s`` input samples (:attr:`StreamableConv1d.history_length`), zeros at
the start, and a chunk of ``n * s`` new samples yields exactly ``n`` frames. A causal transposed
conv places frame ``j`` at ``[j s, j s + kernel_size)``; the first ``N * s`` samples are final once
frame ``N - 1`` is in, and the trimmed ``kernel_size - s`` samples
(:attr:`StreamableConvTranspose1d.overlap_length`, computed without the bias) are the overlap that
the next chunk's output adds to. The zero right padding only ever covers the incomplete last frame.

Lookahead. Non-causal modules read ahead: output frame ``j`` of the conv needs input up to
``(j + 1) s - 1 + padding_right``, and output sample ``t`` of the transposed conv needs frames up to
``floor((t + padding_left) / s)``; :attr:`lookahead` gives these (0 when causal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from audiokit.nn.state import ConvState, ConvTransposeState
from audiokit.nn.streaming import StreamingModule, matmul_rows, require_causal, stride_padding

NORMS = ("weight_norm", "none")
FRAMES_PER_PIECE = 4096  # a depthwise conv's windows are multiplied this many frames at a time


def apply_norm(module: nn.Module, norm: str) -> nn.Module:
    """Wrap ``module``'s ``weight`` with ``norm`` (``"weight_norm"`` via ``torch.nn.utils.parametrizations``
    or ``"none"``) and return it."""
    if norm == "weight_norm":
        return parametrizations.weight_norm(module)
    if norm == "none":
        return module
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrization under ``module`` into a plain weight (in place)."""
    targets = [sub for sub in module.modules() if parametrize.is_parametrized(sub, "weight")]
    with torch.enable_grad():  # so the folded weight stays an nn.Parameter even under no_grad
        for sub in targets:
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
    return module


@dataclass
class ConvWeights:
    """What a :class:`StreamableConv1d` multiplies with in evaluation and streaming.

    ``matrix``: ``(K * C_in, C_out)``, rows ordered (tap, channel) (plain convs); ``taps``: ``(C, K)``
    (a depthwise conv); ``weight``: the ``(C_out, C_in / groups, K)`` weight (always; grouped convs use
    only it).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    matrix: torch.Tensor | None = None
    taps: torch.Tensor | None = field(default=None, metadata={"products": False})  # stays float32 in int8


class StreamableConv1d(nn.Module, StreamingModule):
    """``nn.Conv1d`` with exact-length padding: ``(B, C_in, T) -> (B, C_out, ceil(T / stride))``.

    ``causal=True`` pads only on the left, so frame ``j`` depends on input samples ``< (j + 1) * stride``.

    Training runs ``F.conv1d``. Evaluation and streaming run one time-major arithmetic on the padded
    input ``(B, T, C_in)``, chosen by the layer's shape alone (so a frame's result does not depend on
    the chunking or the number of streams): a plain conv whose kernel is its stride (1x1 convs
    included) multiplies the input's blocks of ``stride`` samples, reshaped
    into rows, by one matrix; another plain conv copies its ``(K * C_in)``-wide windows and multiplies
    them by one matrix; a depthwise conv sums its taps times the windows. Other grouped convs run
    ``F.conv1d``. (Summing shifted block products instead of copying windows saves the copy, but a
    frame's sum must not depend on the chunk, and in a step one product beats ``K / stride``.)
    Streaming state: the last :attr:`history_length` input samples (:class:`ConvState`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = False,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        effective = (kernel_size - 1) * dilation + 1
        if effective < stride:
            raise ValueError(
                f"effective kernel {effective} is shorter than stride {stride}: samples would be skipped"
            )
        self.conv = apply_norm(
            nn.Conv1d(
                in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups, bias=bias
            ),
            norm,
        )
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.causal = causal
        self.effective_kernel_size = effective
        self.padding_total = effective - stride
        self.padding_right = 0 if causal else self.padding_total // 2
        self.padding_left = self.padding_total - self.padding_right
        self.depthwise = groups == in_channels == out_channels and groups > 1
        self.blocked = groups == 1 and dilation == 1 and kernel_size == stride

    @property
    def history_length(self) -> int:
        """Input samples a causal streaming step keeps from the past: ``effective_kernel_size - stride``."""
        return self.padding_total

    @property
    def receptive_field(self) -> int:
        """Input samples that one output frame reads: the effective kernel size."""
        return self.effective_kernel_size

    @property
    def lookahead(self) -> int:
        """Input samples past frame ``j``'s own block ``[j s, (j + 1) s)`` that it reads (0 when causal)."""
        return self.padding_right

    @property
    def time_major(self) -> bool:
        """Whether evaluation and streaming run the time-major arithmetic (not a grouped ``F.conv1d``)."""
        return self.conv.groups == 1 or self.depthwise

    def output_length(self, length: int) -> int:
        """Frames produced for ``length`` input samples: ``ceil(length / stride)``."""
        return -(-length // self.stride)

    # -- offline --------------------------------------------------------------------------------
    @property
    def _runs_conv1d(self) -> bool:
        """Whether ``forward`` runs ``F.conv1d``: in training and for grouped convs."""
        return self.training or not self.time_major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._runs_conv1d:
            extra = (-x.shape[-1]) % self.stride
            return self.conv(F.pad(x, (self.padding_left, self.padding_right + extra)))
        return self.forward_t(x.transpose(1, 2)).transpose(1, 2)

    def forward_t(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on time-major ``x (B, T, C_in)``, returning ``(B, frames, C_out)``."""
        if self._runs_conv1d:
            return self.forward(x.transpose(1, 2)).transpose(1, 2)
        extra = (-x.shape[1]) % self.stride
        padded = F.pad(x, (0, 0, self.padding_left, self.padding_right + extra))
        return self._conv_t(padded, self.current_weights())

    # -- streaming ------------------------------------------------------------------------------
    def prepare_weights(self) -> ConvWeights:
        conv = self.conv
        weight = conv.weight  # weight norm is evaluated here
        prepared = ConvWeights(weight, conv.bias)
        if self.depthwise:
            prepared.taps = weight[:, 0]
        elif conv.groups == 1:
            prepared.matrix = weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
        return prepared

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ConvState | None:
        require_causal(self)
        self.prepare()
        if not self.history_length:
            return None
        shape = (batch_size, self.conv.in_channels, self.history_length)
        return ConvState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        if self.time_major:
            return super().step(x, state, final)
        x = F.pad(x, (0, stride_padding(x.shape[-1], self.stride, final, "stride")))
        if not x.shape[-1]:  # no new samples: no frames, the history stays
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        if state is not None:
            x = torch.cat([state.history, x], -1)
            state.history = x[..., x.shape[-1] - self.history_length :]
        weights = self.prepared()
        return F.conv1d(x, weights.weight, weights.bias, self.stride, 0, self.dilation, self.conv.groups)

    def step_t(self, x: torch.Tensor, state: ConvState | None, final: bool = False) -> torch.Tensor:
        if not self.time_major:
            return super().step_t(x, state, final)
        extra = stride_padding(x.shape[1], self.stride, final, "stride")
        if extra:
            x = F.pad(x, (0, 0, 0, extra))
        if not x.shape[1]:  # no new samples: no frames, the history stays
            return x.new_zeros(x.shape[0], 0, self.conv.out_channels)
        if state is not None:
            x = torch.cat([state.history.transpose(1, 2), x], 1)
            state.history = x[:, x.shape[1] - self.history_length :].transpose(1, 2)
        return self._conv_t(x, self.prepared())

    # -- the arithmetic -------------------------------------------------------------------------
    def _conv_t(self, x: torch.Tensor, weights: ConvWeights) -> torch.Tensor:
        """The conv of the padded time-major input ``x (B, T, C_in)``: ``(B, frames, C_out)``."""
        if weights.taps is not None:
            return self._depthwise(x, weights)
        if self.blocked:
            rows = x.reshape(-1, weights.matrix.shape[0])  # blocks of stride samples
        else:
            windows = x.unfold(1, self.effective_kernel_size, self.stride)  # (B, L, C_in, span)
            if self.dilation > 1:
                windows = windows[..., :: self.dilation]
            rows = windows.transpose(2, 3).reshape(-1, weights.matrix.shape[0])
        y = matmul_rows(rows, weights.matrix, weights.bias)
        return y.view(x.shape[0], -1, weights.matrix.shape[1])

    def _depthwise(self, x: torch.Tensor, weights: ConvWeights) -> torch.Tensor:
        """``sum_k taps[k] * window[k] + bias`` over the windows of ``x (B, T, C)``, at most
        :data:`FRAMES_PER_PIECE` frames at a time (each frame's sum is the same either way)."""
        span, stride = self.effective_kernel_size, self.stride
        frames = max((x.shape[1] - span) // stride + 1, 0)
        if frames > FRAMES_PER_PIECE:
            step = FRAMES_PER_PIECE * stride
            pieces = [x[:, i : i + step + span - stride] for i in range(0, frames * stride, step)]
            return torch.cat([self._depthwise(piece, weights) for piece in pieces], 1)
        windows = x.unfold(1, span, stride)  # (B, frames, C, span)
        if self.dilation > 1:
            windows = windows[..., :: self.dilation]
        y = (windows * weights.taps).sum(-1)
        return y if weights.bias is None else y + weights.bias


class StreamableConvTranspose1d(nn.Module, StreamingModule):
    """``nn.ConvTranspose1d`` trimmed to exact length: ``(B, C_in, N) -> (B, C_out, N * stride)``.

    ``causal=True`` trims only on the right, so output sample ``t`` depends on frames ``<= t // stride``.
    Streaming state: the bias-free output overlap of ``kernel_size - stride`` samples
    (:class:`ConvTransposeState`).
    """

    rounds_weights = False  # the offline forward is nn.ConvTranspose1d on the parameters

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = False,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(
                f"kernel_size {kernel_size} is shorter than stride {stride}: output would have gaps"
            )
        self.convtr = apply_norm(
            nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias), norm
        )
        self.kernel_size = kernel_size
        self.stride = stride
        self.causal = causal
        self.padding_total = kernel_size - stride
        self.padding_right = self.padding_total if causal else self.padding_total // 2
        self.padding_left = self.padding_total - self.padding_right

    @property
    def overlap_length(self) -> int:
        """Samples a causal streaming step carries to the next chunk: ``kernel_size - stride``."""
        return self.padding_total

    @property
    def lookahead(self) -> int:
        """Output samples of look-ahead: sample ``t`` needs frames up to ``(t + lookahead) // stride``."""
        return self.padding_left

    def output_length(self, frames: int) -> int:
        """Samples produced for ``frames`` input frames: ``frames * stride``."""
        return frames * self.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        return y[..., self.padding_left : y.shape[-1] - self.padding_right]

    def prepare_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight, bias (C_out, 1))``, weight norm evaluated."""
        bias = self.convtr.bias
        return self.convtr.weight, None if bias is None else bias[:, None]

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> ConvTransposeState | None:
        require_causal(self)
        self.prepare()
        if not self.overlap_length:
            return None
        shape = (batch_size, self.convtr.out_channels, self.overlap_length)
        return ConvTransposeState(torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvTransposeState | None, final: bool = False) -> torch.Tensor:
        if not x.shape[-1]:  # no new frames: no samples, the overlap stays
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        weight, bias = self.prepared()
        y = F.conv_transpose1d(x, weight, None, self.stride, groups=self.convtr.groups)
        ready = x.shape[-1] * self.stride
        if state is not None:
            y[..., : self.overlap_length] += state.overlap
            state.overlap = y[..., ready:]
        out = y[..., :ready]
        return out if bias is None else out + bias
