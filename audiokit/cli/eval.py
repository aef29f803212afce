"""``audiokit eval``: score test audio against references, or a baseline (opus, sinc, identity) or one of
our codecs (``-m/--model``, through real ``.akc`` files) on them; or an enhancer (``-m``) or enhancement
baseline (rnnoise, gating) on noisy TEST audio against clean references; or a bandwidth extender
(``-m``) on the references downsampled to ``--input-rate``, next to the sinc baseline."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from audiokit.argtypes import finite_number
from audiokit.cli.options import add_force_option, add_raw_options, raw_format
from audiokit.errors import UsageError
from audiokit.evaluation import EvalRequest, evaluate
from audiokit.evaluation.baselines import BASELINES, ENHANCERS
from audiokit.evaluation.pairing import pair_files
from audiokit.io import prepare_outputs
from audiokit.models import resolve_weights
from audiokit.processing import model_family


def _request(args: argparse.Namespace) -> EvalRequest:
    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    for option, value in (("--csv", args.csv), ("--plot", args.plot)):
        if value and (value.endswith(("/", os.sep)) or Path(value).is_dir()):  # "/" names a folder elsewhere
            raise UsageError(f"{option} {value}: is a folder; give a file name")

    family = model_family(args.codec) if args.codec is not None else None
    if args.codec is not None and family is None:
        resolve_weights(args.codec)  # names what is wrong with the model (a one-line ModelError)
    return EvalRequest(
        ref=Path(args.ref),
        test=path(args.test),
        baseline=args.baseline,
        codec=None if family in ("enhancer", "bwe") else args.codec,
        enhancer=args.codec if family == "enhancer" else None,
        extender=args.codec if family == "bwe" else None,
        bitrate_kbps=args.bitrate,
        input_rate=args.input_rate,
        glob=args.glob,
        keep=path(args.keep),
        csv=path(args.csv),
        plot=path(args.plot),
        jobs=args.jobs,
        quiet=args.quiet,
        raw=raw_format(args),
    )


def _value(mean: float | None, half: float | None) -> str:
    """``"   3.142 ± 0.010"``, or ``"n/a"``."""
    return "n/a" if mean is None else f"{mean:8.3f}" + ("" if half is None else f" ± {half:.3f}")


def _print_text(report: dict, request: EvalRequest) -> None:
    if request.codec:
        what = (
            f"codec {report['model']} ({request.codec}) {request.bitrate_kbps:g} kbps "
            f"(actual {report['actual_bitrate_kbps']:.2f} kbps: .akc file sizes)"
        )
    elif request.extender:
        what = f"bandwidth extender {report['model']} ({request.extender}) from {request.input_rate} Hz"
    elif request.enhancer:
        what = f"enhancer {report['model']} ({request.enhancer}) on {request.test} vs {request.ref}"
    elif request.baseline in ENHANCERS:
        what = f"baseline {report['baseline']} on {request.test} vs {request.ref}"
    elif request.baseline:
        what = f"baseline {report['baseline']}"
    else:
        what = f"{request.test} vs {request.ref}"
    if request.baseline == "opus":
        what += (
            f" {request.bitrate_kbps:g} kbps (actual {report['actual_bitrate_kbps']:.2f} kbps incl. Ogg "
            "container)"
        )
    files = f"{report['n']} file{'' if report['n'] == 1 else 's'}"
    print(f"{what}: {files}, {report['seconds']:.1f} s, PESQ {report['pesq_mode']}")
    if "sinc" in report:
        print(f"  {'':<14}{'ours':<18}{'sinc':<18}ours - sinc (paired)")
    for name in report["ci95"]:
        if name == "pesq" and "pesq_by_mode" in report:  # PESQ-WB and PESQ-NB are different scales
            for mode, means in report["pesq_by_mode"].items():
                files = means["count"]["pesq"]
                value = _value(means["pesq"], means["ci95"]["pesq"])
                if "sinc" in report:
                    sinc = report["sinc"]["pesq_by_mode"][mode]
                    value = f"{value:<18}{_value(sinc['pesq'], sinc['ci95']['pesq']):<18}"
                print(f"  {f'pesq ({mode})':<14}{value} ({files} file{'' if files == 1 else 's'})")
            continue
        line = _value(report[name], report["ci95"][name])
        if "sinc" in report:
            diff = report["vs_sinc"][name]
            line = f"{line:<18}{_value(report['sinc'][name], report['sinc']['ci95'][name]):<18}"
            line += _value(diff["mean"], diff["ci95"])
        scored = report["count"][name]
        if report[name] is not None and scored < report["n"]:  # a mean over some files only says so
            line += f" ({scored} of {report['n']} files)"
        print(f"  {name:<14}{line}")
    for name, reason in report["skipped"].items():
        print(f"  skipped for {name}: {reason}")


def _check_outputs(request: EvalRequest, force: bool) -> None:
    """Refuse outputs that would lose data (see :func:`audiokit.io.check_outputs`) before any work:
    ``--csv``, ``--plot`` and the files ``--keep`` saves for each reference."""
    jobs: list[tuple[object, Path]] = [
        (label, path) for label, path in (("--csv", request.csv), ("--plot", request.plot)) if path
    ]
    inputs: list[Path] = []
    if request.keep:  # its files would join the folders scored (and be paired on the next run)
        keep = request.keep.resolve()
        for label, folder in (("REF_DIR", request.ref), ("TEST_DIR", request.test)):
            if folder is not None and Path(folder).is_dir():
                held = Path(folder).resolve()
                if keep == held or held in keep.parents:
                    problem = f"is {label} {folder} or inside it; keep the files elsewhere"
                    raise UsageError(f"--keep {request.keep}: {problem}")
    if jobs or request.keep:
        pairs = pair_files(request.ref, request.test, request.glob)
        inputs = [p for pair in pairs for p in (pair.reference, pair.test) if p is not None]
        if request.keep and (request.codec or request.baseline or request.enhancer or request.extender):
            suffixes = {"opus": (".opus", ".wav")}.get(request.baseline or "", (".wav",))
            if request.codec:
                suffixes = (".akc", ".wav")
            for pair in pairs:
                kept = request.keep / pair.name
                jobs += [(pair.reference, kept.with_suffix(suffix)) for suffix in suffixes]
    prepare_outputs(jobs, force, inputs)


def run(args: argparse.Namespace) -> int:
    request = _request(args)
    _check_outputs(request, args.force)  # first: a data-loss refusal names both files
    request.validate()
    _, report = evaluate(request)
    if args.json:  # what was scored first, so that a saved report says which files it is about
        inputs = {"ref": str(request.ref.resolve()), "test": request.test and str(request.test.resolve())}
        print(json.dumps({**inputs, "glob": request.glob, **report}, indent=2))
    else:  # -q silences progress, never the scores
        _print_text(report, request)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="score test audio against references (PESQ, STOI, ESTOI, SI-SDR, LSD, mel/STFT distance)",
        description="Pair files by relative path under REF and TEST and report mean and 95 % CI of every "
        "metric, or run a baseline on REF: --baseline opus --bitrate KBPS (opusenc/opusdec), "
        "--baseline sinc --input-rate HZ (band-limit and upsample), --baseline identity; or one of our "
        "codecs: -m/--model MODEL --bitrate KBPS (encode to .akc and decode, like audiokit encode/decode). "
        "Enhancement: REF_DIR is clean speech, TEST_DIR the noisy input, which --baseline rnnoise|gating or "
        "-m/--model ENHANCER processes (without either, the noisy input itself is scored). Bandwidth "
        "extension: -m/--model BWE --input-rate HZ extends REF downsampled to HZ and scores the sinc "
        "baseline on the same files in the same report.",
    )
    parser.add_argument("ref", metavar="REF_DIR", help="reference audio: a directory or one file")
    parser.add_argument("test", metavar="TEST_DIR", nargs="?", help="test audio at the same relative paths")
    parser.add_argument("--baseline", choices=BASELINES, help="make the test audio from REF")
    parser.add_argument(
        "-m",
        "--model",
        "--codec",
        dest="codec",
        metavar="MODEL",
        help="code REF with this codec through .akc files, enhance TEST_DIR with this enhancer, or extend "
        "REF downsampled to --input-rate with this bandwidth extender (next to sinc in the same report) "
        "(shipped name, NAME@N for its shipped version N, run directory or .safetensors)",
    )
    parser.add_argument(
        "--bitrate",
        type=finite_number(),
        metavar="KBPS",
        help="Opus or codec bitrate in kbit/s per channel (stereo: twice this in all)",
    )
    parser.add_argument(
        "--input-rate",
        type=int,
        metavar="HZ",
        help="sinc baseline or bandwidth extender: the rate REF is downsampled to (also adds lsd_high, "
        "the LSD above HZ / 2)",
    )
    parser.add_argument("--glob", default="*", help="only reference files whose relative path matches")
    parser.add_argument(
        "--keep", metavar="DIR", help="save the test audio under DIR (and the .akc/.opus files it came from)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the means and CIs")
    parser.add_argument("--csv", metavar="FILE", help="write per-file scores to FILE")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="draw reference/test spectrograms of the first files (.png, .pdf, .svg...: from the extension)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    add_force_option(parser)
    add_raw_options(parser)
    parser.set_defaults(handler=run)
