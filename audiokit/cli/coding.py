"""``audiokit encode`` / ``audiokit decode``: audio files to ``.akc`` bitstreams and back."""

from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import torch

from audiokit import io
from audiokit.bitstream import AkcHeader, AkcReader, write_akc
from audiokit.errors import ModelError, UsageError
from audiokit.evaluation import find_audio
from audiokit.io import AUDIO_EXTENSIONS
from audiokit.models import Codec, Codes
from audiokit.progress import progress

DEFAULT_MODEL = "speech-16k"


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


def header_for(codec: Codec, codes: Codes, weights_hash: str) -> AkcHeader:
    """The ``.akc`` header describing ``codes`` made by ``codec``."""
    return AkcHeader(
        model_name=codec.name,
        weights_hash=weights_hash,
        sample_rate=codec.sample_rate,
        channels=codes.channels,
        num_codebooks=codes.num_codebooks,
        codebook_size=codec.codebook_size,
        frame_rate=Fraction(codec.sample_rate, codec.hop_length),
        num_samples=codes.length,
    )


def encode_file(codec: Codec, source: Path, target: Path, bitrate_bps: float, weights_hash: str) -> dict:
    """Encode one audio file (resampled to the model's rate, channels kept) into ``target``."""
    wav, _ = io.load(source, sample_rate=codec.sample_rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        codes = codec.encode(wav[None], bitrate_bps)
    write_akc(
        target,
        codes.codes.reshape(codes.channels, codes.num_codebooks, -1),
        header_for(codec, codes, weights_hash),
    )
    return {"seconds": wav.shape[1] / codec.sample_rate, "bytes": target.stat().st_size}


def _load_codec(name: str) -> tuple[Codec, str]:
    codec = Codec.from_pretrained(name)
    torch.set_grad_enabled(False)
    return codec, codec.weights_sha256()


def run_encode(args: argparse.Namespace) -> int:
    if args.bitrate <= 0:
        raise UsageError(f"--bitrate must be positive, got {args.bitrate}")
    jobs = _jobs(Path(args.input), Path(args.output), args.glob, ".akc")
    codec, weights_hash = _load_codec(args.model)
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
        hop, delay = codec.hop_length, codec.target_delay
        context = codec.decoder_context_frames
        first_frame = 0 if context is None else max(0, (first_sample + delay) // hop - context)
        stop_frame = min(reader.num_frames, math.ceil((stop_sample + delay + codec.decoder.lookahead) / hop))
        codes = reader.read_frames(first_frame, stop_frame)
    packed = Codes(codes.reshape(-1, codes.shape[1], codes.shape[2]), h.num_samples, h.channels)
    with torch.inference_mode():
        wav = codec.decode_segment(packed, first_frame, first_sample, stop_sample - first_sample)[0]
    rate = codec.sample_rate
    if sample_rate and sample_rate != rate:
        wav = torch.from_numpy(io.resample(wav.numpy().T.copy(), rate, sample_rate).T.copy())
        rate = sample_rate
    io.save(target, wav.clamp(-1, 1), rate, subtype=None if target.suffix.lower() != ".wav" else "PCM_16")


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
            codecs[name] = _load_codec(name)
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
