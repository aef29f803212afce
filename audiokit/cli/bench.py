"""``audiokit bench``: codec speed on CPU (and GPU when present), measured side by side in one run:
offline real-time factors next to EnCodec-24k's architecture, the streaming cost per frame and its
floor, and how many real-time streams one core sustains (:mod:`audiokit.bench.codec`); for an enhancer
(``-m enhance-16k``), its offline speed, per-hop streaming step and batched streams per core next to
RNNoise's (:mod:`audiokit.bench.enhancer`); for a bandwidth extender (``-m bwe-8to16``), the same next
to sinc (soxr) upsampling (:mod:`audiokit.bench.bwe`). ``--device cuda``: a codec's batched round-trip
streams on the GPU per kernel backend, with and without CUDA graphs, against eager
(:func:`audiokit.bench.codec.run_device_kernel_benchmark`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from audiokit.argtypes import finite_number, whole_number
from audiokit.bench import (
    bwe_summary_lines,
    device_summary_lines,
    enhancer_summary_lines,
    run_benchmark,
    run_bwe_benchmark,
    run_device_kernel_benchmark,
    run_enhancer_benchmark,
    summary_lines,
)
from audiokit.cli.options import add_force_option, add_model_option, device_name, doc_text
from audiokit.coding import DEFAULT_MODEL
from audiokit.errors import ModelError, UsageError
from audiokit.io import prepare_outputs
from audiokit.models.base import resolve_weights
from audiokit.processing import model_family
from audiokit.provenance import write_json
from audiokit.threads import MAX_THREADS

AUDIO_BENCHMARKS = {
    "enhancer": (run_enhancer_benchmark, enhancer_summary_lines),
    "bwe": (run_bwe_benchmark, bwe_summary_lines),
}
"""Model family -> (benchmark, summary lines) of the audio-to-audio models; codecs otherwise."""


CPU_STREAMS = [1, 16, 64]
DEVICE_STREAMS = [1, 64, 256, 1024]
"""Default ``--streams`` on the CPU and on a GPU."""

MIN_SECONDS = 0.01
"""Shortest ``--seconds``: some samples at every model's rate."""


def _check_gpu(device: str) -> None:
    """UsageError unless torch sees ``device`` (``cuda`` or ``cuda:N``)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(device.partition(":")[2] or 0) >= count:
        seen = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        raise UsageError(f"--device {device}: torch sees {seen}")


def run(args: argparse.Namespace) -> int:
    family = model_family(args.model)
    if family is None:  # not a shipped name nor weights with their config: say which, as other commands do
        weights = resolve_weights(args.model)
        config = weights.with_suffix(".json").name
        raise ModelError(f"{weights}: no readable model config beside it ({config})")
    if args.out:  # a folder or an input as --out is refused now, not after minutes of measuring
        prepare_outputs([("--out", Path(args.out))], force=args.force)
    if args.device != "cpu":
        if family in AUDIO_BENCHMARKS:
            raise UsageError(f"--device {args.device}: the device benchmark measures codecs only")
        _check_gpu(args.device)
        result = run_device_kernel_benchmark(
            model=args.model,
            device=args.device,
            stream_counts=tuple(args.streams or DEVICE_STREAMS),
            frames=args.frames,
        )
        lines = device_summary_lines
    elif family in AUDIO_BENCHMARKS:
        benchmark, lines = AUDIO_BENCHMARKS[family]
        result = benchmark(
            model=args.model,
            seconds=args.seconds,
            repeats=args.repeats,
            threads=args.threads,
            hops=args.frames,
            stream_counts=tuple(args.streams or CPU_STREAMS),
        )
    else:
        result = run_benchmark(
            model=args.model,
            seconds=args.seconds,
            repeats=args.repeats,
            threads=args.threads,
            frames=args.frames,
            stream_counts=tuple(args.streams or CPU_STREAMS),
            encodec=not args.no_encodec,
        )
        lines = summary_lines
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:  # -q silences progress and notes, never the results
        print("\n".join(lines(result)))
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bench",
        parents=[common],
        help="measure codec, enhancer or bandwidth-extender speed",
        description=doc_text(__doc__),
    )
    add_model_option(
        parser,
        DEFAULT_MODEL,
        "codec, enhancer or bandwidth extender to measure (untrained when no weights are shipped)",
    )
    parser.add_argument(
        "--seconds",
        type=finite_number(MIN_SECONDS, above=False),
        default=10.0,
        help="audio length for offline timing",
    )
    parser.add_argument("--repeats", type=whole_number(), default=3, help="timed repeats (median)")
    parser.add_argument(
        "--threads",
        type=whole_number(1, MAX_THREADS),
        default=1,
        help=f"CPU threads, 1-{MAX_THREADS} (default: 1); figures per core are the process's over them",
    )
    parser.add_argument(
        "--frames",
        type=whole_number(),
        default=100,
        help="streaming frames (enhancer, bwe: hops) timed per mode",
    )
    parser.add_argument(
        "--streams",
        type=whole_number(),
        nargs="+",
        help=f"concurrent stream counts (default: {CPU_STREAMS} on the CPU, {DEVICE_STREAMS} on a GPU)",
    )
    parser.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="cpu (default), or cuda / cuda:N: a codec's batched streams per kernel backend on the GPU",
    )
    parser.add_argument("--no-encodec", action="store_true", help="skip the EnCodec-24k comparison (codecs)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="also write the JSON result to this file")
    add_force_option(parser)
    parser.set_defaults(handler=run)
