"""``audiokit card``: measure a model and write its model card (``<out>/<name>.md`` and ``.json``) with
its training record and the targets of a targets file. The weights must be the run's (its
``model.safetensors``, weights its ``run.json`` records or a checkpoint's); existing card files are
replaced only with ``-f/--force``. What is measured follows the model's family:
a codec next to Opus on validation speech; an enhancer on the fixed noisy validation set next to the
noisy input, RNNoise and spectral gating, on clean speech and on silence; a bandwidth extender on
validation speech taken down to 8 kHz (plain and telephone-coded) next to sinc, on wideband
pass-through, with spectrograms of real narrowband recordings."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from audiokit import io
from audiokit.argtypes import whole_number
from audiokit.cli.options import doc_text
from audiokit.data.paths import data_root
from audiokit.errors import UsageError
from audiokit.models import is_shipped, resolve_weights
from audiokit.processing import model_family


def _common(args: argparse.Namespace, name: str) -> dict:
    return {
        "weights": args.weights,
        "run_dir": Path(args.run_dir),
        "jobs": args.jobs,
        "out": Path(args.out),
        "name": name,
        "init_card": Path(args.init_card) if args.init_card else None,
        "targets": Path(args.targets) if args.targets else None,
        "quiet": args.quiet,
    }


def default_name(weights: str, run_dir: Path) -> str:
    """The card's file name without ``--name``: the model's name for shipped weights (``speech-16k``),
    else the run directory's name, so that a card of other weights never takes a shipped card's name."""
    if is_shipped(weights):
        return resolve_weights(weights).stem
    return Path(os.path.abspath(run_dir)).name


def outputs(family: str, args: argparse.Namespace, name: str) -> list[Path]:
    """The files the card of a ``family`` model writes into ``--out``."""
    out = Path(args.out)
    files = [out / f"{name}.md", out / f"{name}.json"]
    if family == "codec":
        files.append(out / f"{name}-spectrograms.png")
    if family == "bwe":
        files += [out / f"{name}-narrowband-{i}.png" for i in range(1, args.narrowband_files + 1)]
    return files


def _build(args: argparse.Namespace, family: str, name: str) -> tuple[dict, Path]:
    """Measure the ``family`` model (codec, enhancer or bwe) and return its card and folder."""
    # imported here, not at the top: the bwe card's import of scipy.signal alone cost every command
    # (`audiokit --help`, `audiokit enhance`...) about a second of start-up
    from audiokit.evaluation.bwe_card import BweCardRequest, build_bwe_card
    from audiokit.evaluation.enhancer_card import EnhancerCardRequest, build_enhancer_card
    from audiokit.evaluation.model_card import CardRequest, build_card

    if family == "codec":
        if args.valid is None:
            raise UsageError("a codec card needs --valid DIR (validation speech)")
        request = CardRequest(
            valid=Path(args.valid),
            glob=args.glob,
            bitrates=tuple(args.bitrates),
            opus_kbps=tuple(args.opus_kbps),
            **_common(args, name),
        )
        return build_card(request), request.out
    if family == "enhancer":
        noisy_set = Path(args.noisy_set) if args.noisy_set else data_root() / "valid_noisy_16k"
        enhancer = EnhancerCardRequest(noisy_set=noisy_set, max_files=args.max_files, **_common(args, name))
        return build_enhancer_card(enhancer), enhancer.out
    valid = Path(args.valid) if args.valid else data_root() / "corpus" / "16000" / "valid" / "speech"
    bwe = BweCardRequest(
        valid=valid,
        glob=args.glob,
        max_files=args.max_files,
        narrowband=tuple(map(Path, args.narrowband)),
        narrowband_files=args.narrowband_files,
        **_common(args, name),
    )
    return build_bwe_card(bwe), bwe.out


def run(args: argparse.Namespace) -> int:
    from audiokit.evaluation.model_card import write_card
    from audiokit.evaluation.training_record import check_run_weights

    resolve_weights(args.weights)  # one line naming what is wrong with -m
    family = model_family(args.weights)
    if family is None:  # weights without a readable config beside them: say which, as bench does
        config = resolve_weights(args.weights).with_suffix(".json")
        raise UsageError(f"-m {args.weights}: no readable model config beside the weights ({config})")
    if family not in ("codec", "enhancer", "bwe"):
        raise UsageError(
            f"-m {args.weights}: cards are made for codecs, enhancers and bwe models, not {family}"
        )
    run_dir = Path(args.run_dir)
    check_run_weights(args.weights, run_dir)
    name = args.name or default_name(args.weights, run_dir)
    files = outputs(family, args, name)
    io.prepare_outputs([("the card", path) for path in files], force=args.force)
    new = [path for path in files if not path.exists()]
    try:
        card, out = _build(args, family, name)
        md_path, json_path = write_card(card, out)
    except BaseException:  # no figures of a card that was not written (they are written first)
        for path in new:
            path.unlink(missing_ok=True)
        raise
    if not args.quiet:
        print(f"wrote {md_path} and {json_path}")
        for target in card["targets"]:
            print(f"  {target['target']}: {target['status']}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "card",
        parents=[common],
        help="write a model card: quality next to baselines, targets, training record",
        description=doc_text(__doc__),
    )
    parser.add_argument(
        "-m", "--weights", "--model", dest="weights", required=True,
        help="the model: shipped name, run directory or .safetensors (codec, enhancer or bwe)",
    )  # fmt: skip
    parser.add_argument(
        "--run-dir", required=True, help="the `audiokit train` run directory of these weights"
    )
    parser.add_argument(
        "--init-card",
        help="card.json of the weights the run started from (--init), when those beside the recorded "
        "path have been replaced since (e.g. from git: git show REV:docs/models/NAME.json)",
    )
    parser.add_argument(
        "--valid",
        help="validation speech (references): required for a codec; a bwe card defaults to "
        "$AUDIOKIT_DATA/corpus/16000/valid/speech",
    )
    parser.add_argument("--glob", default="*", help="reference files to use (default *)")
    parser.add_argument(
        "--bitrates", type=float, nargs="+", default=[1.5, 3.0, 6.0], metavar="KBPS", help="codec only"
    )
    parser.add_argument(
        "--opus-kbps",
        type=float,
        nargs="+",
        default=[],
        metavar="KBPS",
        help="codec only: Opus also at these bitrates, for context (e.g. 8 12)",
    )
    parser.add_argument(
        "--noisy-set",
        help="enhancer: the noisy set of `audiokit data mix` (default $AUDIOKIT_DATA/valid_noisy_16k)",
    )
    parser.add_argument(
        "--max-files",
        type=whole_number(1),
        help="enhancer/bwe: only this many files, spread over the set (default all)",
    )
    parser.add_argument(
        "--narrowband",
        nargs="+",
        default=[],
        metavar="PATH",
        help="bwe: real narrowband recordings to plot (files, folders, manifests; default the prepared "
        "speech_nb manifest, else samples/speech_fr_8k_a.wav)",
    )
    parser.add_argument(
        "--narrowband-files",
        type=whole_number(0),
        default=3,
        help="bwe: how many recordings to plot (default 3)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the evaluations")
    parser.add_argument(
        "--targets",
        help="YAML/JSON file of the targets and caveat (e.g. docs/models/speech-16k-targets.yaml)",
    )
    parser.add_argument("--out", default="docs/models", help="directory of the card (default docs/models)")
    parser.add_argument(
        "--name",
        help="file name of the card (default: the model's name for shipped weights, else the run directory's "
        "name)",
    )
    parser.add_argument(
        "-f", "--force", action="store_true", help="replace the card's files in --out if they exist"
    )
    parser.set_defaults(handler=run)
