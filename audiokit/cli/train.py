"""``audiokit train RECIPE``: train a model from a YAML recipe (resume, fine-tune, DDP via torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path

from audiokit.argtypes import finite_number, whole_number
from audiokit.cli.options import device_name, doc_text
from audiokit.errors import AudiokitError, PeerStopped, TrainingError, UsageError


def _peer_lost(exc: RuntimeError) -> TrainingError:
    """The one-line error of a process whose collective failed because another process of the run went."""
    message = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())  # gloo's "[.../pair.cc:553] "
    reason = message.split(". ")[0].splitlines()[0] if message else type(exc).__name__
    return TrainingError(
        f"rank {os.environ.get('RANK', '?')}: another process of the run has gone ({reason[:200]}); "
        "its own error, if it printed one, is above"
    )


def run(args: argparse.Namespace) -> int:
    if args.nproc_per_node > 1:
        from audiokit.train.launch import launch

        return launch(args.argv[args.argv.index("train") + 1 :], args.nproc_per_node)
    from audiokit.train.recipe import load_recipe
    from audiokit.train.runtime import launched_world_size, local_rank, lost_peer, resolve_device
    from audiokit.train.signals import StopSignals
    from audiokit.train.trainer import Trainer

    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.recipe).stem
    try:
        recipe = load_recipe(args.recipe, args.set or [])
        if args.device:  # checked by device_name; an error in the recipe is then not blamed on --set
            recipe.run.device = args.device
        if args.resume and args.init:
            raise UsageError(
                "--resume and --init cannot be used together (resume continues a run; init starts one)"
            )
        # the same for every process, so said once: no CUDA here, the run directory refused
        resolve_device(recipe.run.device)
        Trainer.check_run_dir(run_dir, args.resume)
    except AudiokitError as exc:
        # under torchrun, every process of a machine reads the same command line and recipe, and so
        # fails alike: the first says it, once. (Setting up the trainer can fail on one rank alone, a
        # device it lacks: every rank says its own; rank 0's own work: Runtime.on_main.)
        if local_rank() > 0:
            raise PeerStopped(str(exc)) from None
        raise
    try:
        trainer = Trainer(recipe, run_dir, resume=args.resume, init=args.init, quiet=args.quiet)
    except RuntimeError as exc:
        if launched_world_size() > 1 and lost_peer(exc):
            raise _peer_lost(exc) from None
        raise
    try:
        result = trainer.fit(max_steps=args.max_steps, max_minutes=args.max_minutes)
    except RuntimeError as exc:
        if trainer.runtime.world_size > 1 and lost_peer(exc):
            raise _peer_lost(exc) from None
        raise
    finally:
        trainer.close()
    if trainer.is_main:  # the result, -q or not
        summary = {"run_dir": str(run_dir), "step": result.step, "stopped": result.stopped}
        if result.evaluations:
            summary["eval"] = result.evaluations[-1]
        print(json.dumps(summary))
    if result.stopped in StopSignals.NAMES:
        if trainer.is_main:
            print(
                f"audiokit train: stopped by {result.stopped} at step {result.step}; the checkpoint in "
                f"{run_dir} is saved, continue with --resume",
                file=sys.stderr,
            )
        return 128 + signal.Signals[result.stopped].value
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train",
        parents=[common],
        help="train a model from a YAML recipe",
        description=doc_text(__doc__)
        + " Several processes or GPUs on this machine: --nproc-per-node N; on several machines: torchrun.",
    )
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/codec_speech16k.yaml")
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue exactly from <run-dir>/checkpoints/latest.pt"
    )
    parser.add_argument(
        "--init",
        metavar="CKPT",
        help="fine-tune: start from a checkpoint's (EMA) weights or a .safetensors model",
    )
    parser.add_argument(
        "--max-steps",
        type=whole_number(),
        help="stop this session at this step (the schedule is unchanged)",
    )
    parser.add_argument(
        "--max-minutes", type=finite_number(above=False), help="stop this session after this many minutes"
    )
    parser.add_argument(
        "--device", type=device_name, help="cpu, cuda or cuda:N (bf16 autocast on CUDA unless run.bf16=false)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set optim.learning_rate=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=whole_number(),
        default=1,
        metavar="N",
        help="DDP with N processes on this machine (one per GPU with --device cuda), as torchrun would start",
    )
    parser.set_defaults(handler=run)
