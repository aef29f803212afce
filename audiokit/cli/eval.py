"""``audiokit eval``: score test audio against references, or a baseline (opus, sinc, identity) on them."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch

from audiokit import baselines, io
from audiokit.errors import UsageError
from audiokit.evaluation import METRICS, FilePair, check_compatible, pair_files, score_pair, summarize
from audiokit.plots import spectrogram_comparison
from audiokit.progress import progress

PLOT_ROWS = 4


def _make_test(pair: FilePair, ref: torch.Tensor, rate: int, args: argparse.Namespace):
    if args.baseline == "opus":
        return baselines.opus(ref, rate, args.bitrate)
    if args.baseline == "sinc":
        return baselines.sinc(ref, rate, args.input_rate)
    return baselines.identity(ref, rate)


def evaluate_pair(pair: FilePair, args: argparse.Namespace) -> tuple[dict, torch.Tensor, torch.Tensor, int]:
    """Load (or make, for a baseline) the test audio of ``pair`` and score it against the reference."""
    ref, rate = io.load(pair.reference)
    bitrate = None
    if args.baseline:
        made = _make_test(pair, ref, rate, args)
        test, test_rate, bitrate = made.wav, rate, made.bitrate_bps
        if args.keep:
            io.save(Path(args.keep) / Path(pair.name).with_suffix(".wav"), test, rate, subtype="FLOAT")
    else:
        test, test_rate = io.load(pair.test)
    check_compatible(pair, ref, rate, test, test_rate)
    row = {"file": pair.name, "sample_rate": rate, "seconds": ref.shape[1] / rate}
    row.update(score_pair(ref, test, rate))
    if bitrate is not None:
        row["bitrate_kbps"] = bitrate / 1000
    return row, ref, test, rate


def _evaluate_in_worker(indexed: tuple[int, FilePair], args: argparse.Namespace):
    """Worker-process version of :func:`evaluate_pair`; audio only comes back for plotted files."""
    torch.set_num_threads(1)
    index, pair = indexed
    row, ref, test, rate = evaluate_pair(pair, args)
    return (row, ref, test, rate) if args.plot and index < PLOT_ROWS else (row, None, None, rate)


def _validate(args: argparse.Namespace) -> None:
    if args.test and args.baseline:
        raise UsageError("give either TEST_DIR or --baseline, not both")
    if not args.test and not args.baseline:
        raise UsageError("give a TEST_DIR to compare with REF_DIR, or --baseline opus|sinc|identity")
    if args.baseline == "opus" and args.bitrate is None:
        raise UsageError("--baseline opus needs --bitrate KBPS (e.g. --bitrate 6)")
    if args.baseline == "sinc" and args.input_rate is None:
        raise UsageError("--baseline sinc needs --input-rate HZ (e.g. --input-rate 8000)")
    if args.bitrate is not None and args.bitrate <= 0:
        raise UsageError(f"--bitrate must be positive, got {args.bitrate}")


def _write_csv(path: str, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _report(args: argparse.Namespace, rows: list[dict]) -> dict:
    summary = summarize(rows)
    report: dict = {"n": summary.n}
    report.update({name: _json_number(summary.mean[name]) for name in METRICS})
    report["ci95"] = {name: _json_number(summary.ci95[name]) for name in METRICS}
    report["count"] = summary.count
    report["seconds"] = round(sum(r["seconds"] for r in rows), 3)
    rates = sorted({r["sample_rate"] for r in rows})
    report["sample_rates"] = rates
    report["pesq_mode"] = ", ".join(sorted({"wb" if r >= 16000 else "nb" for r in rates}))
    report["pesq_resampled"] = any(r not in (8000, 16000) for r in rates)
    if args.baseline:
        report["baseline"] = args.baseline
        if args.baseline == "opus":
            report["bitrate_kbps"] = args.bitrate
            report["actual_bitrate_kbps"] = round(
                sum(r["bitrate_kbps"] * r["seconds"] for r in rows) / report["seconds"], 3
            )
        if args.baseline == "sinc":
            report["input_rate"] = args.input_rate
    return report


def _print_text(report: dict, args: argparse.Namespace) -> None:
    what = f"baseline {report['baseline']}" if args.baseline else f"{args.test} vs {args.ref}"
    if args.baseline == "opus":
        what += (
            f" {args.bitrate:g} kbps (actual {report['actual_bitrate_kbps']:.2f} kbps incl. Ogg container)"
        )
    print(f"{what}: {report['n']} files, {report['seconds']:.1f} s, PESQ {report['pesq_mode']}")
    for name in METRICS:
        mean, half = report[name], report["ci95"][name]
        value = "n/a" if mean is None else f"{mean:8.3f}" + ("" if half is None else f" ± {half:.3f}")
        print(f"  {name:<14}{value}")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    pairs = pair_files(Path(args.ref), Path(args.test) if args.test else None, args.glob)
    desc = f"eval {args.baseline or ''}".strip()
    plotted: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    plot_rate = None
    if args.jobs > 1 and len(pairs) > 1:
        pool = ProcessPoolExecutor(min(args.jobs, os.cpu_count() or 1))
        results = pool.map(partial(_evaluate_in_worker, args=args), enumerate(pairs))
    else:
        pool = None
        results = (evaluate_pair(pair, args) for pair in pairs)
    rows = []
    try:
        for pair, (row, ref, test, rate) in zip(
            pairs, progress(results, desc, len(pairs), args.quiet), strict=True
        ):
            rows.append(row)
            if args.plot and ref is not None and len(plotted) < PLOT_ROWS and rate == (plot_rate or rate):
                plotted.append((pair.name, ref, test))
                plot_rate = rate
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report = _report(args, rows)
    if args.csv:
        _write_csv(args.csv, rows)
    if args.plot:
        spectrogram_comparison(plotted, plot_rate, args.plot, ("reference", args.baseline or "test"))
    if args.json:
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        _print_text(report, args)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="score test audio against references (PESQ, STOI, ESTOI, SI-SDR, LSD, mel/STFT distance)",
        description="Pair files by relative path under REF and TEST and report mean and 95%% CI of every "
        "metric, or run a baseline on REF: --baseline opus --bitrate KBPS (opusenc/opusdec), "
        "--baseline sinc --input-rate HZ (band-limit and upsample), --baseline identity.",
    )
    parser.add_argument("ref", metavar="REF_DIR", help="reference audio: a directory or one file")
    parser.add_argument("test", metavar="TEST_DIR", nargs="?", help="test audio at the same relative paths")
    parser.add_argument("--baseline", choices=baselines.BASELINES, help="make the test audio from REF")
    parser.add_argument("--bitrate", type=float, metavar="KBPS", help="Opus target bitrate in kbit/s")
    parser.add_argument("--input-rate", type=int, metavar="HZ", help="sinc baseline: band-limit to this rate")
    parser.add_argument("--glob", default="*", help="only reference files whose relative path matches")
    parser.add_argument("--keep", metavar="DIR", help="save the baseline's output audio under DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the means and CIs")
    parser.add_argument("--csv", metavar="FILE", help="write per-file scores to FILE")
    parser.add_argument("--plot", metavar="PNG", help="draw reference/test spectrograms of the first files")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.set_defaults(handler=run)
