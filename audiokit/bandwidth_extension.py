"""File-level bandwidth extension: what ``audiokit bwe`` and the evaluation call.

Any format, rate and channel count goes in; the output is at the model's rate (16 kHz for
``bwe-8to16``) with the input's channels (each extended on its own) and exactly
``round(T * output_rate / input_rate)`` samples per channel (at least 1).

* Input at half the model's rate (8 kHz) goes through the model's own FIR upsampler
  (``model.stream(input_rate=...)``), so a file equals :meth:`BandwidthExtender.extend` on it.
* Input at any other rate is resampled to the model's rate (soxr HQ) and its band edge is measured on
  the input at its own rate (:class:`audiokit.dsp.BandwidthEstimator`, the estimate of
  :func:`audiokit.dsp.estimate_bandwidth`) over a first pass of the whole file, in constant memory, so
  a 16 kHz file also equals ``extend`` on it. Wideband input (edge at the model's Nyquist) is passed
  through unchanged.
* ``input_rate`` treats the input as audio at that rate (resampled there first): 8000 sends
  narrowband audio stored at a higher rate down the 8 kHz path.

Files stream block by block (:func:`audiokit.processing.process_file`: constant memory, atomic outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.dsp import BandwidthEstimator
from audiokit.io import PathLike, RawFormat
from audiokit.models.bwe import NARROWBAND_EDGE_HZ, BandwidthExtender, band_edge, edge_of_bandwidth
from audiokit.processing import Plan, chain, load_model, output_length, process_file, stream_resampler

DEFAULT_MODEL = "bwe-8to16"


def load_extender(spec: str) -> tuple[BandwidthExtender, str]:
    """The bandwidth extender ``spec`` names (shipped name, run directory or ``.safetensors``), in eval
    mode, and the sha256 of its weights; loaded once per process."""
    return load_model(BandwidthExtender, spec)


@torch.no_grad()
def extend_audio(model: BandwidthExtender, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Extend ``wav (channels, samples)`` at ``sample_rate`` Hz in memory: ``(channels,
    output_length(...))`` at the model's rate, the maths :func:`extend_file` streams."""
    rate = model.sample_rate
    if sample_rate in (rate // 2, rate):
        return model.extend(wav, sample_rate)
    x = io.resample(wav.detach().cpu().numpy().T.astype(np.float32), sample_rate, rate)
    x = torch.from_numpy(np.ascontiguousarray(x.T))
    length = output_length(wav.shape[-1], sample_rate, rate)
    x = torch.nn.functional.pad(x[:, :length], (0, max(0, length - x.shape[-1])))
    return model.eval()(x[None], band_edge(wav, sample_rate, rate))[0]


def file_bandwidth_hz(path: PathLike, raw: RawFormat | None = None) -> float:
    """The bandwidth (Hz) of an audio file, measured on the whole file at its own rate in one pass of
    constant memory."""
    estimator = BandwidthEstimator(io.info(path, raw).sample_rate)
    for block in io.iter_blocks(path, raw=raw):
        estimator.update(block)
    return estimator.result()


def extend_file(
    model: BandwidthExtender,
    source: PathLike,
    target: PathLike,
    input_rate: int | None = None,
    raw: RawFormat | None = None,
    block_frames: int = 1 << 16,
) -> dict:
    """Extend one audio file into ``target`` (format from its extension) at the model's rate, in
    constant memory (see the module docstring; :func:`audiokit.processing.process_file` gives the
    returned dict, plus ``edge_hz`` and ``bandwidth_hz``, the input's measured bandwidth, None on the
    narrowband path). ``input_rate``: treat the input as audio at that rate (resampled
    there first; half the model's rate takes the narrowband path); ``source``/``target`` may be ``-``;
    ``raw``: read ``source`` as headerless PCM."""
    edges: list[float] = []
    bandwidths: list[float | None] = []

    def plan(path: Path, info: io.AudioInfo) -> Plan:
        rate, channels, out_rate = info.sample_rate, info.channels, model.sample_rate
        working = input_rate or rate
        to_working = stream_resampler(rate, working, channels)
        if 2 * working == out_rate:
            edges.append(NARROWBAND_EDGE_HZ)
            bandwidths.append(None)
            return Plan(model.stream(1, input_rate=working, channels=channels), out_rate, to_working)
        bandwidths.append(file_bandwidth_hz(path, raw))
        edges.append(min(edge_of_bandwidth(bandwidths[0], rate, out_rate), working / 2))
        session = model.stream(1, edge_hz=edges[0], channels=channels)
        return Plan(session, out_rate, chain(to_working, stream_resampler(working, out_rate, channels)))

    done = process_file(plan, source, target, raw, block_frames)
    return {**done, "edge_hz": edges[0], "bandwidth_hz": bandwidths[0]}
