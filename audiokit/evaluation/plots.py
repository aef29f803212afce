"""Figures: reference vs test spectrograms side by side."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from audiokit.dsp import stft
from audiokit.errors import UsageError
from audiokit.io import atomic_path

PLOT_FORMATS = ("png", "pdf", "svg", "eps", "ps") + (
    ("jpg", "jpeg", "webp", "tif", "tiff") if importlib.util.find_spec("PIL") else ()
)
"""What a figure can be written as (its file's extension); the raster formats beyond PNG need Pillow."""


def plot_format(path: str | Path) -> str:
    """The figure format ``path``'s extension names; UsageError when it names none we can write."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        what = f"extension .{suffix}" if suffix else "no extension"
        raise UsageError(f"{path}: {what}; a figure can be written as .{', .'.join(PLOT_FORMATS)}")
    return suffix


def _db_spectrogram(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    n_fft = 1 << max(8, round(torch.log2(torch.tensor(sample_rate * 0.032)).item()))
    mono = wav.double().mean(0)
    mono = torch.nn.functional.pad(mono, (0, max(0, n_fft - mono.shape[-1])))  # a clip shorter than a frame
    power = stft(mono, n_fft, n_fft // 4).abs().square()
    return 10 * torch.log10(power.clamp_min(1e-10))


def spectrogram_comparison(
    rows: Sequence[tuple[str, Sequence[torch.Tensor]]],
    sample_rate: int,
    path: str | Path,
    titles: Sequence[str] = ("reference", "test"),
) -> None:
    """Write a figure with one row per ``(name, signals)`` and one column per signal (``titles``), in the
    format ``path``'s extension names (:func:`plot_format`).

    Signals are ``(channels, samples)`` audio at ``sample_rate`` Hz, the first one setting the time axis.
    A row shares one dB colour scale (80 dB range below its peak). Written atomically.
    """
    fmt = plot_format(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # imported here: a second of start-up for every command otherwise

    size = (4.5 * len(titles) + 1, 2.8 * len(rows))
    fig, axes = plt.subplots(len(rows), len(titles), figsize=size, squeeze=False, layout="constrained")
    for (name, signals), row_axes in zip(rows, axes, strict=True):
        specs = [_db_spectrogram(wav, sample_rate) for wav in signals]
        top = max(float(s.max()) for s in specs)
        duration = signals[0].shape[-1] / sample_rate
        for ax, spec, title in zip(row_axes, specs, titles, strict=True):
            image = ax.imshow(
                spec.numpy(),
                origin="lower",
                aspect="auto",
                extent=(0, duration, 0, sample_rate / 2000),
                vmin=top - 80,
                vmax=top,
                cmap="magma",
            )
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel("time (s)")
        row_axes[0].set_ylabel("frequency (kHz)")
        fig.colorbar(image, ax=list(row_axes), label="dB")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format=fmt)
    plt.close(fig)
