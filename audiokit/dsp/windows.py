"""Analysis/synthesis windows as torch tensors."""

from __future__ import annotations

import torch

WINDOWS = ("hann", "sqrt_hann", "hamming", "blackman", "rectangular")


def get_window(
    name: str,
    length: int,
    periodic: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return a window of ``length`` samples (periodic by default, as STFTs need).

    ``name`` is one of ``hann``, ``sqrt_hann``, ``hamming``, ``blackman``, ``rectangular``.
    """
    kwargs = {"periodic": periodic, "dtype": dtype, "device": device}
    if name == "hann":
        return torch.hann_window(length, **kwargs)
    if name == "sqrt_hann":
        return torch.hann_window(length, **kwargs).sqrt()
    if name == "hamming":
        return torch.hamming_window(length, **kwargs)
    if name == "blackman":
        return torch.blackman_window(length, **kwargs)
    if name == "rectangular":
        return torch.ones(length, dtype=dtype, device=device)
    raise ValueError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")


def gaussian_window(length: int, std: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Symmetric Gaussian window of ``length`` samples with standard deviation ``std`` samples."""
    if std <= 0:
        raise ValueError(f"gaussian window std must be > 0 samples, got {std}")
    n = torch.arange(length, dtype=dtype) - (length - 1) / 2
    return torch.exp(-0.5 * (n / std) ** 2)
