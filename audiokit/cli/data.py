"""``audiokit data prepare|mix|pack``: build the real-audio corpus from allowlisted Debian packages."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from audiokit.argtypes import finite_number, whole_number
from audiokit.cli.options import number_in, sample_rate_hz
from audiokit.data.manifest import manifest_dir
from audiokit.data.noisy_set import DEFAULT_SNRS, build_noisy_set
from audiokit.data.pack import CODECS, pack
from audiokit.data.prepare import hours_table, prepare
from audiokit.data.sources import ROLES, SPLITS
from audiokit.errors import UsageError
from audiokit.tools import OPUS_MIN_KBPS


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise UsageError(f"--{what} {text!r}: choose from {','.join(allowed)}")
    return names


def _snrs(text: str) -> tuple[float, ...]:
    try:
        snrs = tuple(float(value) for value in text.split(",") if value.strip())
        if all(map(math.isfinite, snrs)):
            return snrs
    except ValueError:
        pass
    raise UsageError(f"--snr {text!r}: expected comma-separated numbers in dB, e.g. -5,0,5,10,20")


def _packages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--packages {text!r}: give allowlisted package names, comma-separated")
    return names


def _data_dir(text: str) -> Path:
    """An argparse type for ``--data-dir``: a folder path (an empty one, e.g. an unset shell variable, would
    otherwise mean the default cache)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; leave the option out for the default")
    return Path(text).expanduser()


def run_prepare(args: argparse.Namespace) -> int:
    deb_dir = args.deb_dir or os.environ.get("AUDIOKIT_DEB_DIR")
    summary = prepare(
        roles=_names(args.roles, ROLES, "roles"),
        splits=_names(args.split, SPLITS, "split"),
        sample_rate=args.sample_rate,
        root=args.data_dir,
        deb_dir=Path(deb_dir) if deb_dir else None,
        quiet=args.quiet,
        packages=_packages(args.packages),
    )
    for message in summary.failed:  # a warning: shown with --quiet too
        print(f"warning: skipped {message}", file=sys.stderr)
    if not args.quiet:
        print(
            f"rules done {summary.units_done}, already done {summary.units_skipped}; clips written "
            f"{summary.clips}, duplicates skipped {summary.duplicates}, silent dropped {summary.silent}, "
            f"undecodable {len(summary.failed)}"
        )
        for split, roles in hours_table(args.data_dir, args.sample_rate).items():
            print(f"{split}: " + ", ".join(f"{role} {hours:.2f} h" for role, hours in sorted(roles.items())))
        print(f"manifests in {manifest_dir(args.data_dir, args.sample_rate)}")
    return 0


def run_mix(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"{args.out}: exists and is not a folder")
    clips = build_noisy_set(
        args.out,
        _snrs(args.snr),
        args.seed,
        root=args.data_dir,
        sample_rate=args.sample_rate,
        quiet=args.quiet,
        force=args.force,
        clip_list=args.list,
    )
    if not args.quiet:
        hours = sum(clip["seconds"] for clip in clips) / 3600
        print(f"{len(clips)} clean/noisy pairs ({hours:.2f} h) in {args.out}, list in clips.jsonl")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    summary = pack(
        args.manifest,
        args.out_dir,
        max_mb=args.max_mb,
        kbps=args.kbps,
        codec=args.codec,
        seed=args.seed,
        shuffle=not args.no_shuffle,
        max_clips=args.max_clips,
        sample_rate=args.sample_rate,
        root=args.data_dir,
        force=args.force,
        quiet=args.quiet,
    )
    if not args.quiet:
        print(
            f"{summary.clips} of {summary.source_clips} clips ({summary.seconds / 3600:.2f} h, "
            f"{summary.bytes / 2**20:.1f} MiB) in {summary.out_dir}: manifest.jsonl, PACK.json, audio/"
        )
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("data", parents=[common], help="prepare real training/validation audio")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    shared = argparse.ArgumentParser(add_help=False)
    # --quiet is accepted after the action too; SUPPRESS keeps `data -q ACTION` from being reset.
    shared.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output"
    )
    shared.add_argument(
        "--data-dir", type=_data_dir, help="data cache (default $AUDIOKIT_DATA or ~/.cache/audiokit/data)"
    )
    shared.add_argument(
        "--sample-rate", type=sample_rate_hz, default=16000, help="corpus rate in Hz (default 16000)"
    )

    prep = actions.add_parser(
        "prepare",
        parents=[shared],
        help="fetch, decode, trim and resample the allowlisted packages; write manifests",
        description="Idempotent and resumable: finished rules are skipped, an interrupted one continues.",
    )
    prep.add_argument(
        "--roles", default=",".join(ROLES), help=f"comma list of {','.join(ROLES)} (default all)"
    )
    prep.add_argument("--split", default=",".join(SPLITS), help="comma list of train,valid (default both)")
    prep.add_argument("--packages", help="comma list: only these allowlisted packages")
    prep.add_argument("--deb-dir", help="take .debs from this folder instead of apt-get ($AUDIOKIT_DEB_DIR)")
    prep.set_defaults(handler=run_prepare)

    mix = actions.add_parser(
        "mix",
        parents=[shared],
        help="build the fixed noisy validation set (valid speech + valid noise)",
    )
    mix.add_argument(
        "--out", type=Path, required=True, help="output folder (gets clean/, noisy/, clips.jsonl)"
    )
    mix.add_argument(
        "--snr",
        default=",".join(f"{snr:g}" for snr in DEFAULT_SNRS),
        help="comma-separated SNRs in dB (default %(default)s; a list that starts with a minus sign takes =:"
        " --snr=-5,0,5)",
    )
    mix.add_argument("--seed", type=whole_number(0), default=0, help="random seed (default 0)")
    mix.add_argument("--list", type=Path, help="also write the clip list here (e.g. recipes/data/...)")
    mix.add_argument(
        "-f", "--force", action="store_true", help="replace --out if it holds an earlier set, and --list"
    )
    mix.set_defaults(handler=run_mix)

    packer = actions.add_parser(
        "pack",
        parents=[shared],
        help="encode a manifest's clips into a small self-contained folder (Ogg Opus + manifest)",
        description="Clips in a seeded random order until the size budget is reached; the folder gets "
        "audio/, manifest.jsonl (paths relative to it) and PACK.json. Written atomically.",
    )
    packer.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="pack folder to create")
    packer.add_argument(
        "--manifest", required=True, help="prepared manifest name (e.g. train_speech) or a .jsonl path"
    )
    packer.add_argument("--codec", choices=CODECS, default="opus", help="audio codec (default opus)")
    packer.add_argument(
        "--kbps",
        type=number_in(OPUS_MIN_KBPS, 256.0, f"an Opus bitrate ({OPUS_MIN_KBPS:g} to 256 kbit/s)"),
        default=32.0,
        help="bitrate in kbit/s (default 32)",
    )
    packer.add_argument(
        "--max-mb",
        type=finite_number(),
        required=True,
        help="size budget of the whole folder in MiB (2**20 bytes)",
    )
    packer.add_argument("--max-clips", type=whole_number(1), help="at most this many clips")
    packer.add_argument("--seed", type=whole_number(0), default=0, help="seed of the clip order (default 0)")
    packer.add_argument("--no-shuffle", action="store_true", help="take clips in the manifest's order")
    packer.add_argument(
        "-f", "--force", action="store_true", help="replace OUT_DIR if it holds an earlier pack"
    )
    packer.set_defaults(handler=run_pack)
