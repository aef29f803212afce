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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

NORMS = ("weight_norm", "none")


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


class StreamableConv1d(nn.Module):
    """``nn.Conv1d`` with exact-length padding: ``(B, C_in, T) -> (B, C_out, ceil(T / stride))``.

    ``causal=True`` pads only on the left, so frame ``j`` depends on input samples ``< (j + 1) * stride``.
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

    def output_length(self, length: int) -> int:
        """Frames produced for ``length`` input samples: ``ceil(length / stride)``."""
        return -(-length // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = (-x.shape[-1]) % self.stride
        return self.conv(F.pad(x, (self.padding_left, self.padding_right + extra)))


class StreamableConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` trimmed to exact length: ``(B, C_in, N) -> (B, C_out, N * stride)``.

    ``causal=True`` trims only on the right, so output sample ``t`` depends on frames ``<= t // stride``.
    """

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
