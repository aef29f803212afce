"""File-level coding: audio files to ``.akc`` bitstreams and back (what ``audiokit encode/decode``, the
evaluation and a server call).

Causal codecs stream whole files in constant memory; decoding a time range reads only the chunks it
needs. Every output is written atomically (:func:`audiokit.io.atomic_path`); callers check their
outputs first with :func:`audiokit.io.prepare_outputs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import soxr
import torch

from audiokit import io
from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter
from audiokit.errors import ModelError, UsageError
from audiokit.io import AUDIO_EXTENSIONS, RawFormat, find_audio
from audiokit.models import Codec, Codes
from audiokit.streaming.akc import encode_to_akc

DEFAULT_MODEL = "speech-16k"
_CODECS: dict[str, tuple[Codec, str]] = {}


def load_codec(spec: str) -> tuple[Codec, str]:
    """The codec ``spec`` names (shipped name, run directory or ``.safetensors``), in eval mode, and the
    sha256 of its weights.

    Loaded once per process and kept: worker processes load it on first use (or inherit the parent's
    copy when forked).
    """
    if spec not in _CODECS:
        codec = Codec.from_pretrained(spec).eval()
        _CODECS[spec] = (codec, codec.weights_sha256())
    return _CODECS[spec]


def codec_bitrate(codec: Codec, kbps: float) -> float:
    """``kbps`` in bits/s when ``codec`` has exactly that bitrate, else a UsageError listing its bitrates."""
    for bps in codec.bitrates:
        if math.isclose(bps, kbps * 1000, rel_tol=1e-6):
            return bps
    listed = ", ".join(f"{b / 1000:g}" for b in codec.bitrates)
    raise UsageError(f"--bitrate {kbps:g}: {codec.name} codes at {listed} kbps only")


def mirror_jobs(
    source: Path,
    target: Path,
    suffix: str,
    pattern: str = "*",
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs: one file, or every file of a directory mirrored under ``target`` with
    its extension replaced by ``suffix`` (``pattern`` filters relative paths). Nothing is checked here:
    pass the pairs to :func:`audiokit.io.prepare_outputs` before writing (two inputs with one output, an
    output that is an input, existing outputs without ``force``)."""
    if source.is_dir():
        files = find_audio(source, pattern, extensions)
        return [(p, (target / p.relative_to(source)).with_suffix(suffix)) for p in files]
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if target.is_dir():
        target = target / source.with_suffix(suffix).name
    return [(source, target)]


def encode_file(
    codec: Codec,
    source: Path,
    target: Path,
    bitrate_bps: float,
    weights_hash: str,
    raw: RawFormat | None = None,
) -> dict[str, float]:
    """Encode one audio file (resampled to the model's rate, channels kept) into the ``.akc`` ``target``.

    Causal codecs stream the file block by block (constant memory, codes written as frames complete);
    non-causal ones need the whole signal at once. ``raw``: read ``source`` as headerless PCM.
    Returns ``{"seconds": audio seconds, "bytes": .akc size}``.
    """
    channels = io.info(source, raw).channels
    header = AkcHeader(
        model_name=codec.name,
        weights_hash=weights_hash,
        sample_rate=codec.sample_rate,
        channels=channels,
        num_codebooks=codec.n_q_for_bitrate(bitrate_bps),
        codebook_size=codec.codebook_size,
        frame_rate=Fraction(codec.sample_rate, codec.hop_length),
    )
    blocks = io.iter_blocks(source, sample_rate=codec.sample_rate, raw=raw)
    with io.atomic_path(target) as tmp, open(tmp, "wb") as file, torch.inference_mode():
        writer = AkcWriter(file, header)
        if codec.config.causal:
            session = codec.stream(1, "encode", bitrate_bps, channels=channels)
            length = encode_to_akc(session, blocks, writer)
        else:
            codes = codec.encode(torch.cat(list(blocks), dim=1)[None], bitrate_bps)
            writer.append(codes.codes.reshape(channels, codes.num_codebooks, -1))
            writer.close(codes.length)
            length = codes.length
    return {"seconds": length / codec.sample_rate, "bytes": target.stat().st_size}


def check_time_range(start_s: float | None, duration_s: float | None) -> None:
    """UsageError unless ``start_s`` is None or >= 0 and ``duration_s`` None or > 0 (seconds, finite)."""
    if start_s is not None and not (math.isfinite(start_s) and start_s >= 0):
        raise UsageError(f"--start {start_s}: must be a time in seconds >= 0")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(f"--duration {duration_s}: must be a time in seconds > 0")


def decode_file(
    codec: Codec,
    source: Path,
    target: Path,
    weights_hash: str,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample_rate: int | None = None,
) -> None:
    """Decode one ``.akc`` file (or its ``[start_s, start_s + duration_s)`` seconds) to the audio file
    ``target`` (16-bit for ``.wav``), at ``sample_rate`` Hz (None: the model's rate)."""
    check_time_range(start_s, duration_s)
    with AkcReader(source) as reader:
        h = reader.header
        if h.model_name != codec.name or h.weights_hash != weights_hash:
            raise ModelError(
                f"{source}: encoded with {h.model_name} weights {h.weights_hash[:12]}, but the decoder is "
                f"{codec.name} weights {weights_hash[:12]}; pass --model with the encoder's weights"
            )
        if h.codebook_size != codec.codebook_size or h.sample_rate != codec.sample_rate:
            raise ModelError(f"{source}: stream parameters do not match model {codec.name}")
        first_sample = 0 if start_s is None else round(start_s * h.sample_rate)
        if first_sample >= h.num_samples:
            raise UsageError(
                f"{source}: --start {start_s} s is past the end ({h.num_samples / h.sample_rate:.3f} s)"
            )
        stop_sample = (
            h.num_samples
            if duration_s is None
            else min(h.num_samples, first_sample + max(1, round(duration_s * h.sample_rate)))
        )
        subtype = "PCM_16" if target.suffix.lower() == ".wav" else None
        rate = sample_rate or codec.sample_rate
        resampler = None
        if rate != codec.sample_rate:
            resampler = soxr.ResampleStream(
                codec.sample_rate, rate, h.channels, dtype="float32", quality="HQ"
            )
        with io.open_writer(target, rate, h.channels, subtype) as write, torch.inference_mode():
            for final, block in _decoded_blocks(codec, reader, first_sample, stop_sample):
                block = block.clamp(-1, 1)
                if resampler is not None:
                    block = torch.from_numpy(resampler.resample_chunk(block.numpy().T, last=final).T.copy())
                write(block)


def _decoded_blocks(
    codec: Codec, reader: AkcReader, first_sample: int, stop_sample: int
) -> Iterator[tuple[bool, torch.Tensor]]:
    """``(is_last, audio (channels, n))`` blocks of samples ``[first_sample, stop_sample)``.

    A whole file through a causal codec is decoded chunk by chunk (constant memory); a segment is
    decoded from enough earlier frames to fill the decoder's history (:attr:`Codec.decoder_context_frames`).
    """
    h = reader.header
    if first_sample == 0 and stop_sample == h.num_samples and codec.config.causal:
        session = codec.stream(1, "decode", length=h.num_samples, channels=h.channels)
        for _, codes in reader.iter_chunks():
            yield False, session.push(codes)[0]
        yield True, session.flush()[0]
        return
    hop, delay = codec.hop_length, codec.target_delay
    context = codec.decoder_context_frames
    first_frame = 0 if context is None else max(0, (first_sample + delay) // hop - context)
    stop_frame = min(reader.num_frames, math.ceil((stop_sample + delay + codec.decoder.lookahead) / hop))
    codes = reader.read_frames(first_frame, stop_frame)
    packed = Codes(codes.reshape(-1, codes.shape[1], codes.shape[2]), h.num_samples, h.channels)
    yield True, codec.decode_segment(packed, first_frame, first_sample, stop_sample - first_sample)[0]


def model_of(source: Path) -> str:
    """The model name an ``.akc`` file's header records."""
    with AkcReader(source) as reader:
        return reader.header.model_name


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
    the model's), as ``audiokit encode`` / ``audiokit decode --sample-rate`` do; returns the ``.akc`` size
    in bytes. ``raw``: read ``source`` as headerless PCM."""
    encode_file(codec, source, akc, bitrate_bps, weights_hash, raw)
    decode_file(codec, akc, decoded, weights_hash, None, None, rate)
    return akc.stat().st_size
