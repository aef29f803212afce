"""File-level audio-to-audio processing through a streaming model session: the machinery
``audiokit enhance`` (:mod:`audiokit.enhancement`) and ``audiokit bwe``
(:mod:`audiokit.bandwidth_extension`) share.

A file is read block by block (:func:`audiokit.io.iter_blocks`), each block goes through the
:class:`Plan` the caller made for that file (a streaming resampler into the session, the session's
``push``, a streaming resampler out of it) and is written as it comes (:func:`audiokit.io.open_writer`):
constant memory on hour-long files, an atomic output, exactly ``round(T * output_rate / input_rate)``
samples per channel. Callers check their outputs first with :func:`audiokit.io.prepare_outputs`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from audiokit import io
from audiokit.coding import mirror_jobs
from audiokit.errors import AudioFormatError, ModelError, UsageError
from audiokit.io import PathLike, RawFormat
from audiokit.models import registered_names, resolve_weights
from audiokit.models.base import AudioModel
from audiokit.progress import audio_progress

LOSSLESS_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".au": "AU",
    ".caf": "CAF",
    ".w64": "W64",
}
"""Output extensions that keep the input's sample format (``PCM_24``, ``FLOAT``...) where they hold it."""
CODEC_FORMATS = {".ogg": "OGG", ".mp3": "MP3"}
"""Output extensions of lossy formats that keep the input's codec (Opus, Vorbis, MPEG layer) where
they hold it (``.opus`` is always Opus)."""

Model = TypeVar("Model", bound=AudioModel)
Resampler = Callable[[torch.Tensor, bool], torch.Tensor]
"""``resample(block (channels, n), last) -> (channels, m)``: one streaming stage."""

_LOADED: dict[tuple[type, str], tuple[Any, str]] = {}


class Session(Protocol):
    """What a plan pushes blocks through (:class:`~audiokit.streaming.audio.AudioStream` and kin)."""

    def push(self, x: torch.Tensor) -> torch.Tensor: ...

    def push_checked(self, x: torch.Tensor) -> torch.Tensor: ...

    def flush(self) -> torch.Tensor: ...


def model_family(spec: str) -> str | None:
    """The family (``"codec"``, ``"enhancer"``, ``"bwe"``...) of the model ``spec`` names (a registered
    name, a ``.safetensors`` file or a folder holding one), or None when it names none."""
    names = registered_names()
    if spec in names:
        return names[spec].family
    try:
        meta = json.loads(resolve_weights(spec).with_suffix(".json").read_text())
        return str(meta["format"]).removeprefix("audiokit-")
    except (ModelError, OSError, ValueError, KeyError, TypeError):
        return None


def load_model(cls: type[Model], spec: str) -> tuple[Model, str]:
    """The ``cls`` model ``spec`` names (shipped name, run directory or ``.safetensors``), in eval mode,
    and the sha256 of its weights; loaded once per process."""
    if (cls, spec) not in _LOADED:
        model = cls.from_pretrained(spec).eval()
        _LOADED[cls, spec] = (model, model.weights_sha256())
    return _LOADED[cls, spec]


def output_jobs(
    source: PathLike, target: PathLike, suffix: str | None = None, pattern: str = "*"
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs as :func:`audiokit.coding.mirror_jobs` makes them (``-``: standard
    input/output). Outputs it names (a directory run, or a file into a folder) get ``suffix``, else the
    input's extension when it is written (:data:`audiokit.io.WRITABLE_EXTENSIONS`), else ``.wav``."""
    if suffix is not None:
        suffix = io.suffix_option(suffix)
    jobs = mirror_jobs(source, target, ".wav", pattern, explicit_suffix=suffix is not None)
    named = (not io.is_stdio(source) and Path(source).is_dir()) or str(target).endswith("/")
    if not (named or (not io.is_stdio(target) and Path(target).is_dir())):
        return jobs
    keep = io.WRITABLE_EXTENSIONS
    return [
        (src, out.with_suffix(suffix or (src.suffix if src.suffix.lower() in keep else ".wav")))
        for src, out in jobs
    ]


def identity_stage(block: torch.Tensor, last: bool) -> torch.Tensor:
    """The :data:`Resampler` that changes nothing."""
    return block


def stream_resampler(rate_in: int, rate_out: int, channels: int) -> Resampler:
    """A streaming soxr (HQ) resampler of ``(channels, n)`` blocks (the identity at equal rates)."""
    if rate_in == rate_out:
        return identity_stage
    stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")

    def resample(block: torch.Tensor, last: bool) -> torch.Tensor:
        out = stream.resample_chunk(np.ascontiguousarray(block.numpy().T), last=last)
        return torch.from_numpy(np.ascontiguousarray(out.T))

    return resample


def chain(*stages: Resampler) -> Resampler:
    """The :data:`Resampler` running ``stages`` one after the other."""

    def run(block: torch.Tensor, last: bool) -> torch.Tensor:
        for stage in stages:
            block = stage(block, last)
        return block

    return run


@dataclass
class Plan:
    """How one file is processed: ``before`` each input block, one item of ``session``, ``after``;
    the output is at ``output_rate`` Hz."""

    session: Session
    output_rate: int
    before: Resampler = identity_stage
    after: Resampler = identity_stage


Planner = Callable[[Path, io.AudioInfo], Plan]
"""``plan(path, info)``: the :class:`Plan` of one readable input file."""


PCM_SUBTYPES = frozenset(
    {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)
"""Sample formats an output keeps from its input (a compressed input's, e.g. MP3's, is not kept)."""
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
"""Sample formats that hold samples beyond full scale (nothing is clipped writing them)."""


def _output_subtype(source_info: io.AudioInfo, target: PathLike, rate: int) -> str | None:
    """The input's sample format or codec where ``target``'s format holds it at ``rate`` Hz, else None
    (the format's default: 16-bit PCM for WAV/FLAC, Vorbis for ``.ogg``, Opus for ``.opus``).

    PCM and float formats are kept in lossless files (:data:`LOSSLESS_FORMATS`), codecs in their own
    containers (:data:`CODEC_FORMATS`): Opus in Ogg stays Opus at the rates Opus codes
    (:data:`~audiokit.io.OPUS_RATES`, which every Opus file decodes at; any other output rate is written
    as Vorbis, the Ogg default), an MP3 keeps its MPEG layer."""
    suffix, subtype = io.output_extension(target), source_info.subtype
    if suffix in LOSSLESS_FORMATS:
        keep = subtype in PCM_SUBTYPES and sf.check_format(LOSSLESS_FORMATS[suffix], subtype)
    else:
        coded_at_rate = subtype != "OPUS" or rate in io.OPUS_RATES
        keep = suffix in CODEC_FORMATS and sf.check_format(CODEC_FORMATS[suffix], subtype) and coded_at_rate
    return subtype if keep else None


def output_length(samples: int, input_rate: int, output_rate: int) -> int:
    """Samples per channel of ``samples`` at ``input_rate`` once processed to ``output_rate``: rounded,
    and at least one for any input (a single sample at 44.1 kHz is not an empty file at 16 kHz)."""
    return max(1, round(samples * output_rate / input_rate)) if samples else 0


def process_file(
    plan: Planner,
    source: PathLike,
    target: PathLike,
    raw: RawFormat | None = None,
    block_frames: int = 1 << 16,
) -> dict:
    """Process one audio file into ``target`` (format from its extension) in constant memory.

    ``plan`` makes the file's :class:`Plan` from its header; the output has the input's channels,
    :func:`output_length` samples per channel and the input's sample format or codec where ``target``'s
    format holds it (:func:`_output_subtype`: Opus in Ogg stays Opus): a float file keeps samples beyond
    full scale, any other format
    gets them clipped to [-1, 1] and counted (``clipped``, all channels). ``source``/``target`` may be
    ``-`` (standard input/output, WAV out). ``raw``: read ``source`` as headerless PCM. Returns
    ``{"input", "output", "input_rate", "sample_rate", "channels", "samples", "clipped", "seconds",
    "compute_seconds"}``.
    """
    began = time.perf_counter()
    try:
        with io.readable_path(source) as path:
            done = _process_path(plan, path, target, raw, block_frames, io.shown_name(source))
    except AudioFormatError as exc:  # name standard input, not its temporary copy
        if io.is_stdio(source) and exc.path != str(source):
            raise AudioFormatError("<stdin>", exc.problem) from None
        raise
    return {
        "input": io.shown_name(source),
        "output": io.shown_output(target),
        **done,
        "seconds": done["samples"] / done["sample_rate"],
        "compute_seconds": time.perf_counter() - began,
    }


def _process_path(
    plan: Planner, source: Path, target: PathLike, raw: RawFormat | None, block_frames: int, name: str
) -> dict:
    """:func:`process_file` of a regular file (``name``: as the user gave it, for the progress bar); returns
    ``{"input_rate", "sample_rate", "channels", "samples"}``."""
    info = io.info(source, raw)
    io.check_input_rate(source, info.sample_rate)
    channels = info.channels
    steps = plan(source, info)
    rate = steps.output_rate
    if io.supported_rate(target, rate) != rate:
        raise UsageError(
            f"{target}: {io.output_extension(target)[1:]} cannot hold {rate} Hz audio (the output's rate); "
            "write another format (.wav, .flac...)"
        )
    io.check_output_format(target, rate, channels)
    subtype = _output_subtype(info, target, rate)
    holds_any_level = subtype in FLOAT_SUBTYPES  # a float file keeps what lies beyond full scale
    read = written = clipped = 0
    with io.open_writer(target, rate, channels, subtype) as write, torch.inference_mode():

        def emit(block: torch.Tensor, last: bool) -> None:
            nonlocal written, clipped
            length = output_length(read, info.sample_rate, rate)  # at most the input's duration
            out = steps.after(block, last)[:, : length - written]
            if last:
                out = F.pad(out, (0, length - written - out.shape[-1]))
            if not holds_any_level:
                clipped += int((out.abs() > 1).sum())
                out = out.clamp(-1, 1)
            write(out)
            written += out.shape[-1]

        blocks = io.iter_blocks(source, block_frames, raw=raw)
        for block in audio_progress(blocks, info.sample_rate, info.frames, name):
            read += block.shape[-1]
            # read through io (finite, within its peak limit), then resampled: the session's check of
            # the peak would refuse the resampler's overshoot of a loud file within that limit
            emit(steps.session.push_checked(steps.before(block, False)[None])[0], False)
        tail = steps.session.push_checked(steps.before(torch.zeros(channels, 0), True)[None])[0]
        emit(torch.cat([tail, steps.session.flush()[0]], -1), True)
    return {
        "input_rate": info.sample_rate,
        "sample_rate": rate,
        "channels": channels,
        "samples": written,
        "clipped": clipped,
    }
