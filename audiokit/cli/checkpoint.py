"""``audiokit checkpoint pack|unpack|average``: a run's training state as committable shards, and back;
the mean of several weights as one model."""

from __future__ import annotations

import argparse

from audiokit.argtypes import finite_number


def run(args: argparse.Namespace) -> int:
    if args.action == "average":
        from audiokit.train.averaging import average_weights

        path = average_weights(args.weights, args.out, args.only or (), args.force, args.float16 or ())
        print(f"{path}: the mean of {len(args.weights)} weights")  # the result: printed with -q too
        return 0
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
        help="pack a run's training state into committable shards, unpack it into a run directory, or "
        "average weights",
        description="pack RUN_DIR OUT: checkpoints/latest.pt as safetensors shards + state.json, with "
        "the run's records (a pack already in OUT is replaced only with -f; other files there are kept); "
        "unpack OUT RUN_DIR: rebuild it, so that audiokit train --resume continues "
        "bit-exactly, with the EMA weights as RUN_DIR/model.safetensors (a model path for -m at once); "
        "average OUT W1 W2 ...: the mean of weights of one architecture as OUT/model.safetensors, whose "
        "JSON names them (audiokit card traces it to the run that saved them).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{pack,unpack,average}")
    pack = actions.add_parser("pack", parents=[common], help="pack a run's training state")
    pack.add_argument("source", help="the run directory")
    pack.add_argument("target", help="the folder to write")
    pack.add_argument(
        "--max-shard-mb", type=finite_number(), default=24.0, help="largest shard in MiB (default 24)"
    )
    pack.add_argument(
        "-f", "--force", action="store_true", help="replace the packed state already in the folder"
    )
    unpack = actions.add_parser("unpack", parents=[common], help="unpack a run's training state")
    unpack.add_argument("source", help="the packed folder")
    unpack.add_argument("target", help="the run directory to make (it must not exist)")
    average = actions.add_parser(
        "average", parents=[common], help="the mean of several weights of one architecture ('model soup')"
    )
    average.add_argument("out", help="the folder to write model.safetensors and model.json in")
    average.add_argument("weights", nargs="+", help="shipped names, run directories or .safetensors files")
    average.add_argument(
        "--only",
        action="append",
        metavar="PREFIX",
        help="average only parameters whose names start with PREFIX (repeatable); the rest are the first "
        "weights'",
    )
    average.add_argument(
        "--float16",
        action="append",
        metavar="PREFIX",
        help="store parameters whose names start with PREFIX as float16 (repeatable): the mean rounded to "
        "float16 values, half the bytes, loaded as float32",
    )
    average.add_argument("-f", "--force", action="store_true", help="replace OUT/model.safetensors")
    parser.set_defaults(handler=run)
