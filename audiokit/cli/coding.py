"""``audiokit encode`` / ``audiokit decode``: audio files to ``.akc`` bitstreams and back."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import soxr
import torch

from audiokit import io
from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter
from audiokit.errors import ModelError, UsageError
from audiokit.evaluation import find_audio
from audiokit.io import AUDIO_EXTENSIONS
from audiokit.models import Codec, Codes
from audiokit.progress import progress
from audiokit.streaming.akc import encode_to_akc

DEFAULT_MODEL = "speech-16k"
_CODECS: dict[str, tuple[Codec, str]] = {}


def load_codec(spec: str) -> tuple[Codec, str]:
    """The codec ``spec`` names (shipped name, directory or ``.safetensors``) and its weights hash.

    Loaded once per process and kept: each ``--jobs`` worker loads it on first use (or inherits the
    parent's copy when forked).
    """
    if spec not in _CODECS:
        codec = Codec.from_pretrained(spec).eval()
        _CODECS[spec] = (codec, codec.weights_sha256())
    return _CODECS[spec]


def _jobs(
    source: Path, target: Path, pattern: str, out_suffix: str, extensions: tuple[str, ...] = AUDIO_EXTENSIONS
) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or a directory mirrored into ``target``."""
    if source.is_dir():
        files = find_audio(source, pattern, extensions)
        return [(p, (target / p.relative_to(source)).with_suffix(out_suffix)) for p in files]
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if target.is_dir():
        target = target / source.with_suffix(out_suffix).name
    return [(source, target)]


def encode_file(codec: Codec, source: Path, target: Path, bitrate_bps: float, weights_hash: str) -> dict:
    """Encode one audio file (resampled to the model's rate, channels kept) into ``target``.

    Causal codecs stream the file block by block (constant memory, codes written as frames complete);
    non-causal ones need the whole signal at once.
    """
    channels = io.info(source).channels
    header = AkcHeader(
        model_name=codec.name,
        weights_hash=weights_hash,
        sample_rate=codec.sample_rate,
        channels=channels,
        num_codebooks=codec.n_q_for_bitrate(bitrate_bps),
        codebook_size=codec.codebook_size,
        frame_rate=Fraction(codec.sample_rate, codec.hop_length),
    )
    blocks = io.iter_blocks(source, sample_rate=codec.sample_rate)
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




def run_encode(args: argparse.Namespace) -> int:
    if args.bitrate <= 0:
        raise UsageError(f"--bitrate must be positive, got {args.bitrate}")
    jobs = _jobs(Path(args.input), Path(args.output), args.glob, ".akc")
    codec, weights_hash = load_codec(args.model)
    bitrate = args.bitrate * 1000
    codec.n_q_for_bitrate(bitrate)  # a clear error before any work
    seconds = size = 0.0
    for source, target in progress(jobs, "encode", quiet=args.quiet):
        done = encode_file(codec, source, target, bitrate, weights_hash)
        seconds += done["seconds"]
        size += done["bytes"]
    if not args.quiet:
        print(
            f"encoded {len(jobs)} file(s), {seconds:.1f} s of audio -> {size / 1024:.1f} KiB "
            f"({size * 8 / max(seconds, 1e-9) / 1000:.2f} kbps with headers) with {codec.name}"
        )
    return 0


def decode_file(
    codec: Codec,
    source: Path,
    target: Path,
    weights_hash: str,
    start_s: float | None,
    duration_s: float | None,
    sample_rate: int | None,
) -> None:
    """Decode one ``.akc`` file (or the ``[start_s, start_s + duration_s)`` part of it) to audio."""
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


def _check_time_range(start_s: float | None, duration_s: float | None) -> None:
    if start_s is not None and not (math.isfinite(start_s) and start_s >= 0):
        raise UsageError(f"--start {start_s}: must be a time in seconds >= 0")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(f"--duration {duration_s}: must be a time in seconds > 0")


def run_decode(args: argparse.Namespace) -> int:
    _check_time_range(args.start, args.duration)
    jobs = _jobs(Path(args.input), Path(args.output), "*", args.suffix, (".akc",))
    codecs: dict[str, tuple[Codec, str]] = {}
    for source, target in progress(jobs, "decode", quiet=args.quiet):
        with AkcReader(source) as reader:
            name = args.model or reader.header.model_name
        if name not in codecs:
            codecs[name] = load_codec(name)
        codec, weights_hash = codecs[name]
        decode_file(codec, source, target, weights_hash, args.start, args.duration, args.sample_rate)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    enc = subparsers.add_parser(
        "encode",
        parents=[common],
        help="compress audio to .akc with a neural codec",
        description="Encode an audio file (any format/rate/channels) or a directory (mirrored) to .akc.",
    )
    enc.add_argument("input", metavar="IN", help="audio file or directory")
    enc.add_argument("output", metavar="OUT", help=".akc file, or directory")
    enc.add_argument(
        "-b",
        "--bitrate",
        type=float,
        default=6.0,
        help="kbps per channel (default 6; stereo takes twice this)",
    )
    enc.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model name or .safetensors path (default {DEFAULT_MODEL})"
    )
    enc.add_argument("--glob", default="*", help="with a directory: only files matching this pattern")
    enc.set_defaults(handler=run_encode)
    dec = subparsers.add_parser(
        "decode",
        parents=[common],
        help="decode .akc to audio",
        description="Decode an .akc file (or a directory of them, mirrored) to audio at the model's rate.",
    )
    dec.add_argument("input", metavar="IN", help=".akc file or directory")
    dec.add_argument("output", metavar="OUT", help="audio file (.wav/.flac/...) or directory")
    dec.add_argument("--start", type=float, help="seconds: decode from here (reads only the chunks needed)")
    dec.add_argument("--duration", type=float, help="seconds to decode from --start")
    dec.add_argument("--sample-rate", type=int, help="resample the output to this rate (Hz)")
    dec.add_argument("--model", help="model name or .safetensors path (default: the one named in the file)")
    dec.add_argument("--suffix", default=".wav", help="output extension for directories (default .wav)")
    dec.set_defaults(handler=run_decode)
