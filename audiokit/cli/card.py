"""``audiokit card``: measure a codec next to Opus on validation speech and write its model card
(``<out>/<name>.md`` and ``.json``) with its training record and the targets of a targets file."""

from __future__ import annotations

import argparse
from pathlib import Path

from audiokit.cli.options import doc_text
from audiokit.evaluation.model_card import CardRequest, build_card, write_card


def run(args: argparse.Namespace) -> int:
    request = CardRequest(
        weights=args.weights,
        run_dir=Path(args.run_dir),
        valid=Path(args.valid),
        glob=args.glob,
        bitrates=tuple(args.bitrates),
        jobs=args.jobs,
        out=Path(args.out),
        name=args.name,
        init_card=Path(args.init_card) if args.init_card else None,
        targets=Path(args.targets) if args.targets else None,
        quiet=args.quiet,
    )
    card = build_card(request)
    md_path, json_path = write_card(card, request.out)
    if not args.quiet:
        print(f"wrote {md_path} and {json_path}")
        for target in card["targets"]:
            print(f"  {target['target']}: {target['status']}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "card",
        parents=[common],
        help="write a model card: quality next to Opus, targets, edge cases, training record",
        description=doc_text(__doc__),
    )
    parser.add_argument(
        "-m", "--weights", "--model", dest="weights", required=True,
        help="the codec: shipped name, run directory or .safetensors",
    )  # fmt: skip
    parser.add_argument(
        "--run-dir", required=True, help="the `audiokit train` run directory of these weights"
    )
    parser.add_argument(
        "--init-card",
        help="card.json of the weights the run started from (--init), when those beside the recorded "
        "path have been replaced since (e.g. from git: git show REV:docs/models/NAME.json)",
    )
    parser.add_argument("--valid", required=True, help="validation speech directory (references)")
    parser.add_argument("--glob", default="*", help="reference files to use (default *)")
    parser.add_argument("--bitrates", type=float, nargs="+", default=[1.5, 3.0, 6.0], metavar="KBPS")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the evaluations")
    parser.add_argument(
        "--targets",
        help="YAML/JSON file of the targets and caveat (e.g. docs/models/speech-16k-targets.yaml)",
    )
    parser.add_argument("--out", default="docs/models", help="directory of the card (default docs/models)")
    parser.add_argument("--name", help="file name of the card (default: the model's name)")
    parser.set_defaults(handler=run)
