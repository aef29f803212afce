"""File-level enhancement: what ``audiokit enhance``, the evaluation and a server call.

Any format, rate and channel count goes in; each channel is enhanced on its own at the model's rate
(soxr HQ there and back) and the output is written at the input's rate, channel count and exact
length. Above the model's rate, the input's band beyond the model's Nyquist frequency is kept,
attenuated as the model attenuated the top of its band (:mod:`audiokit.high_band`). Files stream
block by block through ``model.stream()`` (constant memory on hour-long files, atomic outputs:
:func:`audiokit.processing.process_file`); callers check their outputs first with
:func:`audiokit.io.prepare_outputs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audiokit import io
from audiokit.high_band import HighBand, HighBandSession
from audiokit.io import PathLike, RawFormat
from audiokit.models.enhancer import Enhancer
from audiokit.processing import Plan, load_model, process_file, stream_resampler

DEFAULT_MODEL = "enhance-16k"


def load_enhancer(spec: str) -> tuple[Enhancer, str]:
    """The enhancer ``spec`` names (shipped name, run directory or ``.safetensors``), in eval mode, and
    the sha256 of its weights; loaded once per process."""
    return load_model(Enhancer, spec)


def enhance_audio(
    model: Enhancer, wav: torch.Tensor, sample_rate: int, atten_lim_db: float | None = None, dry: float = 0.0
) -> torch.Tensor:
    """Enhance ``wav (channels, samples)`` at ``sample_rate`` Hz in memory: resampled to the model's rate
    (soxr HQ), ``model.enhance`` per channel, resampled back, and above the model's rate the input's high
    band (:class:`~audiokit.high_band.HighBand`); same shape, aligned with the input."""
    length = wav.shape[-1]
    original = wav.detach().cpu().float()
    x = io.resample(original.numpy().T, sample_rate, model.sample_rate)
    y = model.enhance(torch.from_numpy(np.ascontiguousarray(x.T))[None], atten_lim_db, dry)[0]

    def back(audio: np.ndarray) -> torch.Tensor:  # (samples, channels) at the model's rate -> (C, length)
        out = torch.from_numpy(np.ascontiguousarray(io.resample(audio, model.sample_rate, sample_rate).T))
        return out[:, :length] if out.shape[-1] >= length else F.pad(out, (0, length - out.shape[-1]))

    if sample_rate <= model.sample_rate:
        return back(y.numpy().T)
    high_band = HighBand(original.shape[0], sample_rate, model.sample_rate)
    return torch.from_numpy(high_band.push(original, back(x), back(y.numpy().T), last=True))


def enhance_file(
    model: Enhancer,
    source: PathLike,
    target: PathLike,
    atten_lim_db: float | None = None,
    dry: float = 0.0,
    raw: RawFormat | None = None,
    block_frames: int = 1 << 16,
) -> dict:
    """Enhance one audio file into ``target`` (format from its extension), in constant memory.

    Blocks of ``block_frames`` input samples are resampled to the model's rate, pushed through one
    ``model.stream(1, channels=C)`` session and resampled back (above the model's rate, with the input's
    high band: :class:`~audiokit.high_band.HighBandSession`): the output has the input's rate,
    channels and exact length (see :func:`audiokit.processing.process_file`, which gives the returned
    dict). ``source``/``target`` may be ``-``; ``raw``: read ``source`` as headerless PCM.
    """

    def plan(path: Path, info: io.AudioInfo) -> Plan:
        rate, channels = info.sample_rate, info.channels
        session = model.stream(1, channels=channels, atten_lim_db=atten_lim_db, dry=dry)
        if rate > model.sample_rate:
            return Plan(HighBandSession(session, channels, rate, model.sample_rate), rate)
        return Plan(
            session,
            rate,
            stream_resampler(rate, model.sample_rate, channels),
            stream_resampler(model.sample_rate, rate, channels),
        )

    return process_file(plan, source, target, raw, block_frames)
