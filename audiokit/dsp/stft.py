"""STFT/iSTFT with perfect reconstruction, and magnitude helpers."""

from __future__ import annotations

import torch

from audiokit.dsp.windows import get_window


def _window(name: str, win_length: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(like, torch.Tensor):  # a numpy array failed below with "no attribute 'is_complex'"
        kind = type(like)
        hint = "; torch.from_numpy(x) converts it" if kind.__module__ == "numpy" else ""
        raise TypeError(f"the STFT takes a torch tensor, got {kind.__module__}.{kind.__qualname__}{hint}")
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return get_window(name, win_length, dtype=dtype, device=like.device)


def stft(
    x: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str = "hann",
    center: bool = True,
) -> torch.Tensor:
    """Complex STFT of ``(..., T)`` audio -> ``(..., n_fft // 2 + 1, frames)``.

    With ``center=True`` frames are centred (reflect padding of ``n_fft // 2``), so there are
    ``T // hop_length + 1`` frames.
    """
    win_length = win_length or n_fft
    shape = x.shape
    spec = torch.stft(
        x.reshape(-1, shape[-1]),
        n_fft,
        hop_length,
        win_length,
        _window(window, win_length, x),
        center=center,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(
    spec: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str = "hann",
    length: int | None = None,
    center: bool = True,
) -> torch.Tensor:
    """Inverse of :func:`stft` (windowed overlap-add, window-sum normalised) -> ``(..., length)``."""
    win_length = win_length or n_fft
    shape = spec.shape
    wav = torch.istft(
        spec.reshape(-1, *shape[-2:]),
        n_fft,
        hop_length,
        win_length,
        _window(window, win_length, spec),
        center=center,
        length=length,
    )
    return wav.reshape(*shape[:-2], wav.shape[-1])


def magnitude(spec: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``|spec|``, with ``eps`` added under the square root to keep gradients finite at 0."""
    if eps == 0.0:
        return spec.abs()
    return (spec.real.square() + spec.imag.square() + eps).sqrt()
