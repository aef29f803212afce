"""``audiokit demo``: code the speech clips in ``samples/`` with a codec through real ``.akc`` files and
put the result next to Opus at the same bitrate: sizes, real bitrate, real-time factor, PESQ, STOI and
a spectrogram comparison."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from audiokit.argtypes import add_threads_option, finite_number
from audiokit.cli.options import add_model_option, use_threads
from audiokit.coding import DEFAULT_MODEL, load_codec
from audiokit.evaluation.demo import opus_kbps_for, side_by_side
from audiokit.folders import check_target, staged_folder
from audiokit.models import Codec, is_shipped
from audiokit.models.base import model_label

DEFAULT_BITRATES = (1.5, 3.0, 6.0)
HEADER = (
    f"{'clip':<24}{'s':>5}{'kbps':>6}{'real':>6}{'input KiB':>10}{'.akc KiB':>9}{'.opus KiB':>10}"
    f"{'RTF':>7}   {'PESQ ours/Opus':<16}{'STOI ours/Opus':<14}"
)


def _format_row(row: dict) -> str:
    return (
        f"{row['clip'][:23]:<24}{row['seconds']:5.1f}{row['bitrate_kbps']:6.3g}"
        f"{row['actual_bitrate_kbps']:6.2f}{row['input_bytes'] / 1024:10.1f}{row['akc_bytes'] / 1024:9.2f}"
        f"{row['opus_bytes'] / 1024:10.2f}{row['real_time_factor']:7.3f}   "
        f"{row['pesq']:.3f} / {row['opus_pesq']:<8.3f}{row['stoi']:.3f} / {row['opus_stoi']:.3f}"
    )


def default_bitrates(codec: Codec) -> list[float]:
    """:data:`DEFAULT_BITRATES` (kbit/s) where ``codec`` has them all, else every bitrate it has."""
    own = [bps / 1000 for bps in codec.bitrates]
    wanted = [kbps for kbps in DEFAULT_BITRATES if any(math.isclose(kbps, k, rel_tol=1e-6) for k in own)]
    return wanted if len(wanted) == len(DEFAULT_BITRATES) else own


def run(args: argparse.Namespace) -> int:
    """Code the clips into a fresh ``--out`` (staged: it appears whole, and replaces an existing one only
    with ``-f``) and print the tables; ``-q`` leaves out the notes and the per-clip rows, never the means."""
    use_threads(args)
    out = Path(args.out)
    check_target(out, [Path(args.samples)], "demo.json", "demo output", args.force)  # before any work
    codec, weights_hash = load_codec(args.model)
    shipped = is_shipped(args.model)
    if not shipped and not args.quiet:
        print(f"note: {args.model} is not a shipped model (weights loaded from a path, e.g. a checkpoint)")
    print(
        f"model {model_label(args.model, codec.name)}{' (shipped)' if shipped else ''}, "
        f"weights {weights_hash[:12]}, "
        f"{codec.sample_rate} Hz; clips {args.glob} from {args.samples}; "
        f"real-time factor = encode+decode time / audio time on {torch.get_num_threads()} thread(s)"
    )
    bitrates = args.bitrate or default_bitrates(codec)
    with staged_folder(out, force=True) as staging:  # check_target refused what needs -f
        summary = side_by_side(args.model, Path(args.samples), args.glob, bitrates, staging, args.quiet, out)
    for mean in summary["means"]:
        kbps = mean["bitrate_kbps"]
        opus_kbps = opus_kbps_for(kbps)
        print(f"\n{kbps:g} kbps (Opus at {opus_kbps:g} kbps){'' if opus_kbps == kbps else ', its minimum'}:")
        print(HEADER)
        clips = [] if args.quiet else [r for r in summary["clips"] if r["bitrate_kbps"] == kbps]
        for row in clips + [mean]:
            print(_format_row(row))
        print(f"spectrograms: {out / summary['figures'][f'{kbps:g}']}")
    print(f"outputs (.akc, .opus, decoded .wav, demo.json) in {out}/")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="code the sample speech with a codec next to Opus: sizes, speed, PESQ/STOI, spectrograms",
        description="Encode and decode the speech clips of --samples (resampled to the model's rate) "
        "through .akc files, and Opus at the same bitrate (at 6 kbps when ours is below); print bitrates, "
        "file sizes, real-time factor and PESQ/STOI per clip and their mean; write spectrogram PNGs into "
        "--out.",
    )
    add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("--samples", default="samples", help="directory of clips (default samples)")
    parser.add_argument("--glob", default="speech_*", help="clips to use (default speech_*)")
    parser.add_argument(
        "--bitrate",
        type=finite_number(),
        nargs="+",
        metavar="KBPS",
        help="bitrates in kbit/s (default 1.5 3 6, or every bitrate of a model that lacks one of them)",
    )
    parser.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    parser.add_argument(
        "-f", "--force", action="store_true", help="replace --out if it holds an earlier demo's outputs"
    )
    add_threads_option(parser)
    parser.set_defaults(handler=run)
