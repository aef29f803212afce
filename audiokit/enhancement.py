"""File-level enhancement: what ``audiokit enhance``, the evaluation and a server call.

Any format, rate and channel count goes in; each channel is enhanced on its own at the model's rate
(soxr HQ there and back) and the output is written at the input's rate, channel count and exact
length. Files stream block by block through ``model.stream()`` (constant memory on hour-long files);
every output is written atomically (:func:`audiokit.io.open_writer`); callers check their outputs first
with :func:`audiokit.io.prepare_outputs`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

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
from audiokit.models.enhancer import Enhancer

DEFAULT_MODEL = "enhance-16k"
LOSSLESS_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".au": "AU",
    ".caf": "CAF",
}
"""Output extensions that keep the input's sample format (``PCM_24``, ``FLOAT``...) where they hold it."""

_ENHANCERS: dict[str, tuple[Enhancer, str]] = {}


def model_family(spec: str) -> str | None:
    """The family (``"codec"``, ``"enhancer"``...) of the model ``spec`` names (a registered name, a
    ``.safetensors`` file or a folder holding one), or None when it names none."""
    names = registered_names()
    if spec in names:
        return names[spec].family
    try:
        meta = json.loads(resolve_weights(spec).with_suffix(".json").read_text())
        return str(meta["format"]).removeprefix("audiokit-")
    except (ModelError, OSError, ValueError, KeyError, TypeError):
        return None


def load_enhancer(spec: str) -> tuple[Enhancer, str]:
    """The enhancer ``spec`` names (shipped name, run directory or ``.safetensors``), in eval mode, and
    the sha256 of its weights; loaded once per process."""
    if spec not in _ENHANCERS:
        model = Enhancer.from_pretrained(spec).eval()
        _ENHANCERS[spec] = (model, model.weights_sha256())
    return _ENHANCERS[spec]


def check_knobs(atten_lim_db: float | None, dry: float) -> None:
    """UsageError unless ``atten_lim_db`` is None or >= 0 dB and ``dry`` in [0, 1]."""
    if atten_lim_db is not None and not (np.isfinite(atten_lim_db) and atten_lim_db >= 0):
        raise UsageError(f"--atten-lim-db {atten_lim_db}: must be an attenuation limit in dB >= 0")
    if not 0.0 <= dry <= 1.0:
        raise UsageError(f"--dry {dry}: must be a wet/dry mix in [0, 1] (0: fully enhanced)")


def enhance_jobs(
    source: PathLike, target: PathLike, suffix: str | None = None, pattern: str = "*"
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs as :func:`audiokit.coding.mirror_jobs` makes them (``-``: standard
    input/output). Outputs it names (a directory run, or a file into a folder) get ``suffix``, else the
    input's extension when it is written (:data:`audiokit.io.WRITABLE_EXTENSIONS`), else ``.wav``."""
    if suffix is not None:
        suffix = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
        if suffix not in io.WRITABLE_EXTENSIONS:
            raise UsageError(f"--suffix {suffix}: write one of {', '.join(io.WRITABLE_EXTENSIONS)}")
    jobs = mirror_jobs(source, target, ".wav", pattern)
    named = (not io.is_stdio(source) and Path(source).is_dir()) or str(target).endswith("/")
    if not (named or (not io.is_stdio(target) and Path(target).is_dir())):
        return jobs
    keep = io.WRITABLE_EXTENSIONS
    return [
        (src, out.with_suffix(suffix or (src.suffix if src.suffix.lower() in keep else ".wav")))
        for src, out in jobs
    ]


def enhance_audio(
    model: Enhancer, wav: torch.Tensor, sample_rate: int, atten_lim_db: float | None = None, dry: float = 0.0
) -> torch.Tensor:
    """Enhance ``wav (channels, samples)`` at ``sample_rate`` Hz in memory: resampled to the model's rate
    (soxr HQ), ``model.enhance`` per channel, resampled back; same shape, aligned with the input."""
    length = wav.shape[-1]
    x = io.resample(wav.detach().cpu().numpy().T.astype(np.float32), sample_rate, model.sample_rate)
    y = model.enhance(torch.from_numpy(np.ascontiguousarray(x.T))[None], atten_lim_db, dry)[0]
    back = torch.from_numpy(np.ascontiguousarray(io.resample(y.numpy().T, model.sample_rate, sample_rate).T))
    return back[:, :length] if back.shape[-1] >= length else F.pad(back, (0, length - back.shape[-1]))


def _resampler(rate_in: int, rate_out: int, channels: int) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """A streaming soxr (HQ) resampler of ``(channels, n)`` blocks: ``resample(block, last)``."""
    if rate_in == rate_out:
        return lambda block, last: block
    stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")

    def resample(block: torch.Tensor, last: bool) -> torch.Tensor:
        out = stream.resample_chunk(np.ascontiguousarray(block.numpy().T), last=last)
        return torch.from_numpy(np.ascontiguousarray(out.T))

    return resample


def _output_subtype(source_info: io.AudioInfo, target: PathLike) -> str | None:
    """The input's sample format when ``target`` is lossless and holds it, else None (the format's
    default: 16-bit PCM for WAV/FLAC)."""
    fmt = LOSSLESS_FORMATS.get(io.output_extension(target))
    return source_info.subtype if fmt and sf.check_format(fmt, source_info.subtype) else None


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
    ``model.stream(1, channels=C)`` session, resampled back and written; the output has the input's
    rate, channels and exact length (clamped to [-1, 1]), and its sample format where ``target`` is
    lossless and holds it. ``source``/``target`` may be ``-`` (standard input/output, WAV out).
    ``raw``: read ``source`` as headerless PCM.
    Returns ``{"input", "output", "sample_rate", "channels", "samples", "seconds", "compute_seconds"}``.
    """
    began = time.perf_counter()
    try:
        with io.readable_path(source) as path:
            done = _enhance_path(model, path, target, atten_lim_db, dry, raw, block_frames)
    except AudioFormatError as exc:  # name standard input, not its temporary copy
        if io.is_stdio(source) and exc.path != str(source):
            raise AudioFormatError("<stdin>", exc.problem) from None
        raise
    return {
        "input": "<stdin>" if io.is_stdio(source) else str(source),
        "output": "<stdout>" if io.is_stdio(target) else str(target),
        **done,
        "seconds": done["samples"] / done["sample_rate"],
        "compute_seconds": time.perf_counter() - began,
    }


def _enhance_path(
    model: Enhancer,
    source: Path,
    target: PathLike,
    atten_lim_db: float | None,
    dry: float,
    raw: RawFormat | None,
    block_frames: int,
) -> dict:
    """:func:`enhance_file` of a regular file; returns ``{"sample_rate", "channels", "samples"}``."""
    info = io.info(source, raw)
    rate, channels = info.sample_rate, info.channels
    if io.supported_rate(target, rate) != rate:
        raise UsageError(
            f"{target}: {io.output_extension(target)[1:]} cannot hold {rate} Hz audio (the input's rate); "
            "write another format (.wav, .flac...)"
        )
    io.check_output_format(target, rate, channels)
    to_model = _resampler(rate, model.sample_rate, channels)
    from_model = _resampler(model.sample_rate, rate, channels)
    session = model.stream(1, channels=channels, atten_lim_db=atten_lim_db, dry=dry)
    read = written = 0
    with (
        io.open_writer(target, rate, channels, _output_subtype(info, target)) as write,
        torch.inference_mode(),
    ):

        def emit(block: torch.Tensor, last: bool) -> None:
            nonlocal written
            out = from_model(block, last)[:, : read - written]  # never more than the input's length
            if last:
                out = F.pad(out, (0, read - written - out.shape[-1]))
            write(out.clamp(-1, 1))
            written += out.shape[-1]

        for block in io.iter_blocks(source, block_frames, raw=raw):
            read += block.shape[-1]
            emit(session.push(to_model(block, False)[None])[0], False)
        tail = session.push(to_model(torch.zeros(channels, 0), True)[None])[0]
        emit(torch.cat([tail, session.flush()[0]], -1), True)
    return {"sample_rate": rate, "channels": channels, "samples": written}
