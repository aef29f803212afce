"""``audiokit checkpoint pack|unpack``: a run's training state as committable shards, and back."""

from __future__ import annotations

import argparse

from audiokit.cli.options import finite_number


def run(args: argparse.Namespace) -> int:
    from audiokit.train.portable import pack_run, unpack_run

    if args.action == "pack":
        written = pack_run(args.source, args.target, int(args.max_shard_mb * 2**20), args.force)
        total = sum(path.stat().st_size for path in written) / 2**20
        print(f"{args.target}: {len(written)} files, {total:.1f} MiB")  # the result: printed with -q too
    else:
        path = unpack_run(args.source, args.target)
        print(f"{path}: ready; continue with audiokit train RECIPE --run-dir {args.target} --resume")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "checkpoint",
        parents=[common],
        help="pack a run's training state into committable shards, or unpack it into a run directory",
        description="pack RUN_DIR OUT: checkpoints/latest.pt as safetensors shards + state.json, with "
        "the run's records (a pack already in OUT is replaced only with -f; other files there are kept); "
        "unpack OUT RUN_DIR: rebuild it, so that audiokit train --resume continues "
        "bit-exactly, with the EMA weights as RUN_DIR/model.safetensors (a model path for -m at once).",
    )
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", help="pack: the run directory; unpack: the packed folder")
    parser.add_argument("target", help="pack: the folder to write; unpack: the run directory to make")
    parser.add_argument(
        "--max-shard-mb", type=finite_number(), default=24.0, help="largest shard in MiB (default 24)"
    )
    parser.add_argument(
        "-f", "--force", action="store_true", help="pack: replace the packed state already in the folder"
    )
    parser.set_defaults(handler=run)
