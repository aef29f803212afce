"""File-level coding: audio files to ``.akc`` bitstreams and back (what ``audiokit encode/decode``, the
evaluation and a server call).

Causal codecs stream whole files in constant memory; decoding a time range reads only the chunks it
needs. Every output is written atomically (:func:`audiokit.io.atomic_path`); callers check their
outputs first with :func:`audiokit.io.prepare_outputs`.

An ``.akc`` names the weights that wrote it (model name and sha256). Every shipped version of a
model's weights stays addressable by that hash through the archive ``audiokit/weights/ARCHIVE.json``
(plus the one ``$AUDIOKIT_WEIGHTS_ARCHIVE`` names): :func:`weights_for` finds the file, and
:func:`entropy_model_for` the entropy-coding models beside it (``<stem>.entropy.safetensors``, the learned
prior, and ``<stem>.entropy.json``, the static tables).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from audiokit import io
from audiokit.bitstream import MAX_CHANNELS, AkcHeader, AkcReader, AkcWriter
from audiokit.dsp import BandwidthEstimator
from audiokit.entropy import EntropyCoder, EntropyModel
from audiokit.entropy_model import PriorModel
from audiokit.errors import AudioFormatError, BitstreamError, ModelError, UsageError
from audiokit.io import AUDIO_EXTENSIONS, PathLike, RawFormat, find_audio
from audiokit.models import Codec, Codes
from audiokit.models.archive import (
    archive_entries,
    archive_entry,
    decoding_weights_for,
    model_version,
)
from audiokit.models.base import model_label
from audiokit.progress import audio_progress
from audiokit.streaming import CodecStream
from audiokit.streaming.akc import encode_to_akc

DEFAULT_MODEL = "speech-16k"
_CODECS: dict[str, tuple[Codec, str]] = {}
_CODES_SHA256: dict[str, str] = {}  # Codec.codes_sha256() by weights sha256


def load_codec(spec: str) -> tuple[Codec, str]:
    """The codec ``spec`` names (shipped name, ``name@version`` of an archived shipped version, run
    directory or ``.safetensors``), in eval mode, and the sha256 of its weights.

    Loaded once per process and kept: worker processes load it on first use (or inherit the parent's
    copy when forked).
    """
    if spec not in _CODECS:
        codec = Codec.from_pretrained(spec).eval()
        _CODECS[spec] = (codec, codec.weights_sha256())
    return _CODECS[spec]


def writes_same_codes(model_name: str, weights_hash: str, codec: Codec, codec_hash: str) -> bool:
    """Whether ``codec`` (whose weights' sha256 is ``codec_hash``) decodes files written by
    ``model_name``'s weights ``weights_hash``: the same weights, or archived ones that write the same
    codes."""
    if codec.name != model_name:
        return False
    if weights_hash == codec_hash:
        return True
    entry = archive_entries().get(weights_hash)
    if entry is None or entry["model"] != model_name or not entry.get("codes"):
        return False
    if codec_hash not in _CODES_SHA256:
        _CODES_SHA256[codec_hash] = codec.codes_sha256()
    return entry["codes"] == _CODES_SHA256[codec_hash]


def codec_for(header: AkcHeader) -> tuple[Codec, str]:
    """The codec (and its sha256) that decodes ``header``'s stream: the weights that wrote it, or an
    installed later version that writes the same codes (:func:`decoding_weights_for`)."""
    return load_codec(str(decoding_weights_for(header.model_name, header.weights_hash)))


def entropy_models_for(model_name: str, weights_hash: str) -> list[EntropyCoder]:
    """The entropy-coding models shipped with the weights ``weights_hash`` of ``model_name``, preferred
    first: the learned prior (``<stem>.entropy.safetensors``), then the static tables
    (``<stem>.entropy.json``), then superseded priors (``<stem>.entropy@<version>.safetensors``, kept so
    that the files coded with them still decode; never chosen to encode); those that are there."""
    found = _entropy_files_for(model_name, weights_hash)
    if not found:
        path = decoding_weights_for(model_name, weights_hash)
        raise ModelError(
            f"{model_name} weights {weights_hash[:12]}: no entropy-coding model "
            f"({path.with_name(path.stem + '.entropy.safetensors')} or .entropy.json)"
        )
    return [model for _, model in found]


def _entropy_files_for(model_name: str, weights_hash: str) -> list[tuple[Path, EntropyCoder]]:
    """The entropy-coding models (with their files) beside the weights that decode ``weights_hash``'s
    files; they model the codes, so for an archived version without its own, those of the newest
    installed version that writes the same codes (``speech-16k@1`` takes ``speech-16k``'s)."""
    found = _entropy_models_in(decoding_weights_for(model_name, weights_hash))
    codes = None if found else archive_entry(model_name, weights_hash).get("codes")
    if codes:
        same = [e for e in archive_entries().values() if e["model"] == model_name and e.get("codes") == codes]
        for entry in sorted(same, key=lambda e: -e["version"]):
            if found := _entropy_models_in(entry["path"]):
                break
    return found


def _entropy_models_in(path: Path) -> list[tuple[Path, EntropyCoder]]:
    """The entropy-coding models beside the weights file ``path`` with their files, in the order of
    :func:`entropy_models_for`."""
    files = [
        (path.with_name(path.stem + ".entropy.safetensors"), PriorModel),
        (path.with_name(path.stem + ".entropy.json"), EntropyModel),
        *((old, PriorModel) for old in sorted(path.parent.glob(path.stem + ".entropy@*.safetensors"))),
    ]
    models = []
    for file, kind in files:
        if not file.is_file():
            continue
        try:
            models.append((file, kind.load(file)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{file}: not a valid entropy-coding model ({exc})") from None
    return models


def entropy_model_file(model_name: str, weights_hash: str, model_id: int) -> str | None:
    """The file name of the entropy-coding model with id ``model_id`` shipped with ``model_name``'s weights
    ``weights_hash`` (e.g. ``speech-16k.entropy@1.safetensors``); None when this package lacks it."""
    try:
        found = _entropy_files_for(model_name, weights_hash)
        return next((file.name for file, model in found if model.model_id == model_id), None)
    except ModelError:
        return None


def entropy_model_for(model_name: str, weights_hash: str, model_id: int | None = None) -> EntropyCoder:
    """The entropy-coding model shipped with the weights ``weights_hash`` of ``model_name``: the one whose
    id is ``model_id`` (what a version-3 header names) when there is one, else the preferred one (the
    learned prior when shipped)."""
    models = entropy_models_for(model_name, weights_hash)
    return next((m for m in models if m.model_id == model_id), models[0])


def entropy_model_of(codec: Codec, weights_hash: str) -> EntropyCoder:
    """The preferred entropy-coding model of ``codec`` (shipped weights only; else a :class:`UsageError`)."""
    if model_version(codec.name, weights_hash) is None:
        raise UsageError(
            f"--entropy: {codec.name} weights {weights_hash[:12]} were never shipped, so no entropy-coding "
            "model comes with them; encode without --entropy"
        )
    try:
        return entropy_model_for(codec.name, weights_hash)
    except ModelError as exc:
        raise UsageError(f"--entropy: {exc}") from None


def codec_bitrate(codec: Codec, kbps: float, option: str = "--bitrate", model: str | None = None) -> float:
    """``kbps`` in bits/s when ``codec`` has exactly that bitrate, else a UsageError (naming ``option``
    and the model as the user named it, ``model``) listing its bitrates."""
    for bps in codec.bitrates:
        if math.isclose(bps, kbps * 1000, rel_tol=1e-6):
            return bps
    listed = ", ".join(f"{b / 1000:g}" for b in codec.bitrates)
    label = codec.name if model is None else model_label(model, codec.name)
    raise UsageError(f"{option} {kbps:g}: {label} codes at {listed} kbps only")


def mirror_jobs(
    source: PathLike,
    target: PathLike,
    suffix: str,
    pattern: str = "*",
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    explicit_suffix: bool = False,
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs: one file, or every file of a directory mirrored under ``target`` with
    its extension replaced by ``suffix`` (``pattern`` filters relative paths). One file goes into
    ``target`` when that is a directory or ends in ``/`` (a folder to create). ``-`` (standard
    input/output) is one file. Nothing is checked here: pass the pairs to
    :func:`audiokit.io.prepare_outputs` before writing (two inputs with one output, an output that is
    an input, existing outputs without ``force``). UsageError for a ``pattern`` other than ``*`` with one
    file, and for an ``explicit_suffix`` (``--suffix``) where the output is a file name given."""
    for name, what in ((source, "input"), (target, "output")):
        if str(name) == "":  # Path("") is the current folder
            raise UsageError(f"the {what} is an empty name; give a file, a folder or - (standard {what})")
    folder = str(target).endswith(("/", os.sep))
    one_file = io.is_stdio(source) or Path(source).is_file()
    if one_file and pattern != "*":
        raise UsageError(f"--glob {pattern!r} picks files in a folder; {io.shown_name(source)} is not one")
    named = folder or (not io.is_stdio(target) and Path(target).is_dir())
    if one_file and explicit_suffix and not named:
        raise UsageError(f"--suffix names a folder run's outputs; {io.shown_output(target)} is named already")
    if io.is_stdio(source):
        if named:
            raise UsageError(f"{target}: with - (standard input) as input, give an output file or -")
        return [(Path(source), Path(target))]
    if Path(source).is_dir() and io.is_stdio(target):
        raise UsageError(f"{source}: is a folder; give an output folder, not - (standard output)")
    source, target = Path(source), Path(target)
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise UsageError(f"{target}: exists and is not a folder; give a folder for the folder {source}")
        if not target.exists() and not folder and target.suffix.lower() in (*AUDIO_EXTENSIONS, ".akc"):
            raise UsageError(
                f"{target}: names a file, but the input {source} is a folder, whose output is a folder; "
                "give a folder name (a trailing / makes one)"
            )
        # files in an output folder inside the input one are earlier outputs, not inputs
        inside = Path(os.path.abspath(source)) in Path(os.path.abspath(target)).parents
        files = find_audio(source, pattern, extensions, exclude=target if inside else None)
        return [(p, (target / p.relative_to(source)).with_suffix(suffix)) for p in files]
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if folder or target.is_dir():
        target = target / source.with_suffix(suffix).name
    return [(source, target)]


FULL_SCALE_LIMIT = 0.99
"""Peak that ``rescale`` scales an input down to when it is above it (EnCodec's ``-r``)."""


@dataclass
class _InputStats:
    """What one pass over an input found: samples per channel, peak, content bandwidth."""

    estimator: BandwidthEstimator
    samples: int = 0
    peak: float = 0.0


def _measured(blocks: Iterable[torch.Tensor], stats: _InputStats, gain: float) -> Iterator[torch.Tensor]:
    for block in blocks:
        stats.samples += block.shape[-1]
        stats.peak = max(stats.peak, float(block.abs().max()))
        stats.estimator.update(block)
        yield block if gain == 1.0 else block * gain


def encode_file(
    codec: Codec,
    source: PathLike,
    target: PathLike,
    bitrate_bps: float,
    weights_hash: str,
    raw: RawFormat | None = None,
    rescale: bool = False,
    entropy: EntropyCoder | None = None,
) -> dict[str, float]:
    """Encode one audio file (resampled to the model's rate, channels kept) into the ``.akc`` ``target``.

    ``source``/``target`` may be ``-`` (standard input/output). The ``.akc`` records the input's own
    rate and length (version 2), so :func:`decode_file` gives them back. Causal codecs stream the file
    block by block (constant memory, codes written as frames complete); non-causal ones need the whole
    signal at once. ``raw``: read ``source`` as headerless PCM. ``rescale``: scale an input whose peak is
    above :data:`FULL_SCALE_LIMIT` down to it (EnCodec's ``-r``; one more pass over the input).
    ``entropy``: entropy-code the codes with these tables (a version-3 ``.akc``; the decoded audio is
    the same).

    Returns ``seconds`` (audio), ``bytes`` (.akc size), the input's ``sample_rate`` and ``samples``,
    its ``peak`` (linear, before ``rescale``), the ``gain`` applied and its content ``bandwidth_hz``.
    """
    with io.readable_path(source) as path:
        info = io.info(path, raw)
        io.check_input_rate(path, info.sample_rate)
        gain = 1.0
        if rescale:
            blocks = io.iter_blocks(path, raw=raw, allow_loud=True)
            peak = max(float(block.abs().max()) for block in blocks)
            gain = min(FULL_SCALE_LIMIT / peak, 1.0) if peak > 0 else 1.0
        channels = info.channels
        if channels > MAX_CHANNELS:
            raise AudioFormatError(path, f"{channels} channels: an .akc holds 1 to {MAX_CHANNELS}")
        header = AkcHeader(
            model_name=codec.name,
            weights_hash=weights_hash,
            sample_rate=codec.sample_rate,
            channels=channels,
            num_codebooks=codec.n_q_for_bitrate(bitrate_bps),
            codebook_size=codec.codebook_size,
            frame_rate=Fraction(codec.sample_rate, codec.hop_length),
            source_rate=info.sample_rate,
            entropy_model=None if entropy is None else entropy.model_id,
        )
        stats = _InputStats(BandwidthEstimator(info.sample_rate))
        native = io.iter_blocks(path, raw=raw, allow_loud=rescale)
        shown = audio_progress(native, info.sample_rate, info.frames, io.shown_name(source))
        native = _measured(shown, stats, gain)
        resampled = io.resample_blocks(native, info.sample_rate, codec.sample_rate, channels)
        blocks = _at_least_one_sample(resampled, channels)
        with io.atomic_path(target) as tmp, open(tmp, "wb") as file, torch.inference_mode():
            writer = AkcWriter(file, header, entropy)
            if codec.config.causal:
                session = codec.stream(1, "encode", bitrate_bps, channels=channels)
                length = encode_to_akc(session, blocks, writer, lambda: stats.samples, checked=True)
            else:
                codes = codec.encode(torch.cat(list(blocks), dim=1)[None], bitrate_bps)
                writer.append(codes.codes.reshape(channels, codes.num_codebooks, -1))
                writer.close(codes.length, stats.samples)
                length = codes.length
            size = file.tell()
    return {
        "seconds": length / codec.sample_rate,
        "bytes": size,
        "sample_rate": info.sample_rate,
        "samples": stats.samples,
        "peak": stats.peak,
        "gain": gain,
        "bandwidth_hz": stats.estimator.result(),
    }


def _at_least_one_sample(blocks: Iterable[torch.Tensor], channels: int) -> Iterator[torch.Tensor]:
    """``blocks`` (``(channels, n)``), then one silent sample if they held none: an input shorter than
    one model-rate sample (1 sample above twice the model's rate) still codes a frame; decoding gives
    back the input's own length."""
    seen = 0
    for block in blocks:
        seen += block.shape[-1]
        yield block
    if seen == 0:
        yield torch.zeros(channels, 1)


def check_time_range(start_s: float | None, duration_s: float | None) -> None:
    """UsageError unless ``start_s`` is None or >= 0 and ``duration_s`` None or > 0 (seconds, finite)."""
    if start_s is not None and not (math.isfinite(start_s) and start_s >= 0):
        raise UsageError(f"--start {start_s}: must be a time in seconds >= 0")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(f"--duration {duration_s}: must be a time in seconds > 0")


def output_length(header: AkcHeader, rate: int) -> int:
    """Samples per channel of a whole decode of ``header``'s stream at ``rate`` Hz: exactly the encoded
    input's length at its own rate, the coded length at the model's, else the same duration rounded."""
    if rate == header.sample_rate:
        return header.num_samples
    if rate == header.original_rate:
        return header.original_samples
    return round(Fraction(header.original_samples * rate, header.original_rate))


def decode_file(
    codec: Codec,
    source: PathLike,
    target: PathLike,
    weights_hash: str,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample_rate: int | None = None,
    rescale: bool = False,
) -> dict[str, float]:
    """Decode one ``.akc`` file (or its ``[start_s, start_s + duration_s)`` seconds) to the audio file
    ``target`` (16-bit for ``.wav``; ``-``: a WAV on standard output).

    ``sample_rate``: the output rate in Hz; None gives back the encoded input's own rate and length
    exactly (the model's rate for version-1 files; for Opus/MP3 outputs, the nearest rate they hold).
    A time range is the same span of samples a whole decode at that rate holds. Samples beyond full
    scale are clipped and counted, unless ``rescale`` (EnCodec's ``-r``): then a first pass finds the
    output's peak and, when it is above full scale, the whole output is scaled to a peak of
    :data:`FULL_SCALE_LIMIT` (memory stays constant; decoding takes twice as long). Returns ``seconds``,
    ``samples``, ``sample_rate``, ``channels``, ``clipped`` (samples clipped, all channels) and
    ``scale`` (the factor applied, 1.0 when none).
    """
    check_time_range(start_s, duration_s)
    with io.readable_path(source) as path, AkcReader(path) as reader:
        h = reader.header
        if not writes_same_codes(h.model_name, h.weights_hash, codec, weights_hash):
            raise ModelError(
                f"{source}: encoded with {h.model_name} weights {h.weights_hash[:12]}, but the decoder is "
                f"{codec.name} weights {weights_hash[:12]}, which are not known to write the same codes; "
                "pass --model with the encoder's weights"
            )
        _check_stream(io.shown_name(source), reader, codec)
        rate = sample_rate or io.supported_rate(target, h.original_rate)
        if sample_rate is None and rate < io.MIN_SAMPLE_RATE:
            raise UsageError(
                f"{io.shown_name(source)}: encoded from {h.original_rate} Hz audio, below the "
                f"{io.MIN_SAMPLE_RATE} Hz audiokit writes; pass --sample-rate"
            )
        io.check_output_format(target, rate, h.channels)
        total = output_length(h, rate)
        first = 0 if start_s is None else round(min(start_s * rate, total))  # 1e308 s: past the end
        if start_s is not None and first >= total:
            raise UsageError(f"{source}: --start {start_s} s is past the end ({total / rate:.3f} s)")
        stop = (
            total if duration_s is None else min(total, first + max(1, round(min(duration_s * rate, total))))
        )
        subtype = "PCM_16" if io.output_extension(target) == ".wav" else None
        scale = 1.0
        if rescale:
            with torch.inference_mode():
                blocks = _decoded_at_rate(codec, reader, rate, first, stop, total)
                peak = max((float(b.abs().max()) for b in blocks if b.numel()), default=0.0)
            scale = FULL_SCALE_LIMIT / peak if peak > 1 else 1.0
        clipped = 0
        with io.open_writer(target, rate, h.channels, subtype) as write, torch.inference_mode():
            blocks = _decoded_at_rate(codec, reader, rate, first, stop, total)
            for block in audio_progress(blocks, rate, stop - first, io.shown_name(source)):
                block = block * scale if scale != 1.0 else block
                clipped += int((block.abs() > 1).sum())
                write(block.clamp(-1, 1))
    return {
        "seconds": (stop - first) / rate,
        "samples": stop - first,
        "sample_rate": rate,
        "channels": h.channels,
        "clipped": clipped,
        "scale": scale,
    }


def _check_stream(name: str, reader: AkcReader, codec: Codec) -> None:
    """A one-line error naming the file ``name`` unless ``codec`` can decode ``reader``'s stream: the
    model's rate, frame rate and codebooks, and enough frames for the stated length."""
    h = reader.header
    model = (codec.sample_rate, Fraction(codec.sample_rate, codec.hop_length), codec.codebook_size)
    if (h.sample_rate, h.frame_rate, h.codebook_size) != model or h.num_codebooks > codec.num_codebooks:
        raise ModelError(
            f"{name}: stream parameters ({h.sample_rate} Hz, frame rate {h.frame_rate} Hz, "
            f"{h.num_codebooks} codebooks of {h.codebook_size}) do not match model {codec.name} "
            f"({model[0]} Hz, frame rate {model[1]} Hz, up to {codec.num_codebooks} codebooks of {model[2]})"
        )
    most = reader.num_frames * codec.hop_length - codec.target_delay
    if h.num_samples > max(most, 0):
        raise BitstreamError(
            f"{name}: {reader.num_frames} frames decode to at most {max(most, 0)} samples, but the "
            f"stream holds {h.num_samples} samples"
        )


RESAMPLE_MARGIN = 1024
"""Model-rate samples decoded beyond each end of a time range before resampling it, so that the
resampler's filter sees what it sees in a whole decode (soxr HQ needs under 256)."""


def _decoded_at_rate(
    codec: Codec, reader: AkcReader, rate: int, first: int, stop: int, total: int
) -> Iterator[torch.Tensor]:
    """Blocks ``(channels, n)`` of output samples ``[first, stop)`` at ``rate`` Hz, where a whole decode
    holds ``total``: the model's samples, resampled by one streaming soxr resampler and cut or padded
    to ``total``. A range is resampled from model samples starting on the grid both rates share (so
    its samples fall on the whole decode's) with :data:`RESAMPLE_MARGIN` more on each side."""
    h = reader.header
    model_rate = h.sample_rate
    if first == stop:  # a stream shorter than half a sample at this rate: no samples
        return
    if rate == model_rate:
        yield from _decoded_blocks(codec, reader, first, stop)
        return
    if first == 0 and stop == total:
        blocks = _decoded_blocks(codec, reader, 0, h.num_samples)
        yield from _exact_length(io.resample_blocks(blocks, model_rate, rate, h.channels), total)
        return
    step = model_rate // math.gcd(model_rate, rate)  # model samples between shared grid points
    margin = RESAMPLE_MARGIN * max(1, math.ceil(model_rate / rate))
    begin = max(0, (first * model_rate // rate - margin) // step * step)
    end = min(h.num_samples, -(-stop * model_rate // rate) + margin)
    resampled = io.resample_blocks(_decoded_blocks(codec, reader, begin, end), model_rate, rate, h.channels)
    yield from _exact_length(_skipped(resampled, first - begin * rate // model_rate), stop - first)


def _skipped(blocks: Iterable[torch.Tensor], count: int) -> Iterator[torch.Tensor]:
    """``blocks`` (``(channels, n)``) without their first ``count`` samples."""
    for block in blocks:
        cut = min(count, block.shape[-1])
        count -= cut
        if cut < block.shape[-1]:
            yield block[:, cut:]


def _exact_length(blocks: Iterable[torch.Tensor], length: int) -> Iterator[torch.Tensor]:
    """``blocks`` cut after ``length`` samples in all, or padded with silence to ``length``."""
    done = 0
    channels = 1
    for block in blocks:
        channels = block.shape[0]
        block = block[:, : length - done]
        done += block.shape[-1]
        if block.shape[-1]:
            yield block
    if done < length:
        yield torch.zeros(channels, length - done)


def _decoded_blocks(
    codec: Codec, reader: AkcReader, first_sample: int, stop_sample: int
) -> Iterator[torch.Tensor]:
    """Blocks ``(channels, n)`` of samples ``[first_sample, stop_sample)`` at the model's rate (clamped to
    [-1, 1] only by the caller), decoded from enough earlier frames to fill the decoder's history
    (:attr:`Codec.decoder_context_frames`). A causal codec decodes them chunk by chunk (constant memory,
    however long the range); a non-causal one all at once."""
    h = reader.header
    hop, delay = codec.hop_length, codec.target_delay
    context = codec.decoder_context_frames
    first_frame = 0 if context is None else max(0, (first_sample + delay) // hop - context)
    stop_frame = min(reader.num_frames, math.ceil((stop_sample + delay + codec.decoder.lookahead) / hop))
    if codec.config.causal:
        audio = _streamed(codec.stream(1, "decode", channels=h.channels), reader, first_frame, stop_frame)
        audio = _skipped(audio, first_sample - first_frame * hop)
        yield from _exact_length(audio, stop_sample - first_sample)
        return
    codes = reader.read_frames(first_frame, stop_frame)
    packed = Codes(codes.reshape(-1, codes.shape[1], codes.shape[2]), h.num_samples, h.channels)
    yield codec.decode_segment(packed, first_frame, first_sample, stop_sample - first_sample)[0]


def _streamed(session: CodecStream, reader: AkcReader, start: int, stop: int) -> Iterator[torch.Tensor]:
    """Audio ``(channels, n)`` of the ``"decode"`` ``session`` fed frames ``[start, stop)`` of ``reader``
    one chunk at a time, then its tail; sample 0 is the first sample of frame ``start``."""
    size = reader.header.chunk_frames
    for index in range(start // size, -(-stop // size)):
        first = index * size
        yield session.push(reader.read_chunk(index)[:, :, max(start - first, 0) : stop - first])[0]
    yield session.flush()[0]


def code_file(
    codec: Codec,
    weights_hash: str,
    source: Path,
    akc: Path,
    decoded: Path,
    bitrate_bps: float,
    rate: int | None = None,
    raw: RawFormat | None = None,
) -> int:
    """Encode ``source`` to the ``.akc`` file ``akc`` and decode that to ``decoded`` at ``rate`` Hz (None:
    the input's own), as ``audiokit encode`` / ``audiokit decode --sample-rate`` do; returns the ``.akc`` size
    in bytes. ``raw``: read ``source`` as headerless PCM."""
    encode_file(codec, source, akc, bitrate_bps, weights_hash, raw)
    decode_file(codec, akc, decoded, weights_hash, None, None, rate)
    return akc.stat().st_size
