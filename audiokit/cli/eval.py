"""``audiokit eval``: score test audio against references, or a baseline (opus, sinc, identity) or one of
our codecs (``--codec``, through real ``.akc`` files) on them."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch

from audiokit import baselines, io
from audiokit.cli.coding import decode_file, encode_file, load_codec
from audiokit.errors import UsageError
from audiokit.evaluation import METRICS, FilePair, check_compatible, pair_files, score_pair, summarize
from audiokit.models import Codec
from audiokit.plots import spectrogram_comparison
from audiokit.progress import progress

PLOT_ROWS = 4



def codec_bitrate(codec: Codec, kbps: float) -> float:
    """``kbps`` in bits/s when ``codec`` has exactly that bitrate, else a UsageError listing its bitrates."""
    for bps in codec.bitrates:
        if math.isclose(bps, kbps * 1000, rel_tol=1e-6):
            return bps
    listed = ", ".join(f"{b / 1000:g}" for b in codec.bitrates)
    raise UsageError(f"--bitrate {kbps:g}: {codec.name} codes at {listed} kbps only")


def code_file(
    codec: Codec,
    weights_hash: str,
    source: Path,
    akc: Path,
    decoded: Path,
    bitrate_bps: float,
    rate: int | None = None,
) -> int:
    """Encode ``source`` to the ``.akc`` file ``akc`` and decode that to ``decoded`` at ``rate`` Hz (None:
    the model's), as ``audiokit encode`` / ``audiokit decode --sample-rate`` do; returns the ``.akc`` size
    in bytes."""
    encode_file(codec, source, akc, bitrate_bps, weights_hash)
    decode_file(codec, akc, decoded, weights_hash, None, None, rate)
    return akc.stat().st_size


def _run_codec(pair: FilePair, ref: torch.Tensor, rate: int, args: argparse.Namespace):
    codec, weights_hash = load_codec(args.codec)
    bitrate = codec_bitrate(codec, args.bitrate)
    with tempfile.TemporaryDirectory(prefix="audiokit-eval-") as tmp:
        where = Path(args.keep or tmp) / pair.name
        akc, decoded = where.with_suffix(".akc"), where.with_suffix(".wav")
        size = code_file(codec, weights_hash, pair.reference, akc, decoded, bitrate, rate)
        out, _ = io.load(decoded)
    seconds = ref.shape[-1] / rate
    return baselines.BaselineOutput(baselines.fit_length(out, ref.shape[-1]), size * 8 / seconds, size)


def _make_test(pair: FilePair, ref: torch.Tensor, rate: int, args: argparse.Namespace):
    if args.codec:
        return _run_codec(pair, ref, rate, args)
    if args.baseline == "opus":
        coded = Path(args.keep) / Path(pair.name).with_suffix(".opus") if args.keep else None
        return baselines.opus(ref, rate, args.bitrate, coded)
    if args.baseline == "sinc":
        return baselines.sinc(ref, rate, args.input_rate)
    return baselines.identity(ref, rate)


def evaluate_pair(pair: FilePair, args: argparse.Namespace) -> tuple[dict, torch.Tensor, torch.Tensor, int]:
    """Load (or make, for a baseline or codec) the test audio of ``pair`` and score it against the reference.

    Codec output is decoded back at the reference rate and trimmed/padded to its length exactly like
    the Opus baseline's (:func:`audiokit.baselines.fit_length`).
    """
    ref, rate = io.load(pair.reference)
    bitrate = None
    if args.baseline or args.codec:
        made = _make_test(pair, ref, rate, args)
        test, test_rate, bitrate = made.wav, rate, made.bitrate_bps
        if args.keep and args.baseline:
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
    if args.codec and args.baseline:
        raise UsageError("give either --codec or --baseline, not both")
    system = "--codec" if args.codec else "--baseline"
    if args.test and (args.baseline or args.codec):
        raise UsageError(f"give either TEST_DIR or {system}, not both")
    if not args.test and not args.baseline and not args.codec:
        raise UsageError(
            "give a TEST_DIR to compare with REF_DIR, --baseline opus|sinc|identity, or --codec MODEL"
        )
    if args.bitrate is not None and args.bitrate <= 0:
        raise UsageError(f"--bitrate must be positive, got {args.bitrate}")
    if args.baseline == "opus" and args.bitrate is None:
        raise UsageError("--baseline opus needs --bitrate KBPS (e.g. --bitrate 6)")
    if args.baseline == "sinc" and args.input_rate is None:
        raise UsageError("--baseline sinc needs --input-rate HZ (e.g. --input-rate 8000)")
    if args.codec:
        codec, _ = load_codec(args.codec)
        if args.bitrate is None:
            listed = ", ".join(f"{b / 1000:g}" for b in codec.bitrates)
            raise UsageError(f"--codec needs --bitrate KBPS ({codec.name}: {listed})")
        codec_bitrate(codec, args.bitrate)


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
    if args.codec:
        codec, weights_hash = load_codec(args.codec)
        report.update(codec=args.codec, model=codec.name, weights_sha256=weights_hash)
        report["model_sample_rate"] = codec.sample_rate
    if args.baseline == "opus" or args.codec:
        report["bitrate_kbps"] = args.bitrate
        report["actual_bitrate_kbps"] = round(
            sum(r["bitrate_kbps"] * r["seconds"] for r in rows) / report["seconds"], 3
        )
    if args.baseline == "sinc":
        report["input_rate"] = args.input_rate
    return report


def _print_text(report: dict, args: argparse.Namespace) -> None:
    if args.codec:
        what = (
            f"codec {report['model']} ({args.codec}) {args.bitrate:g} kbps "
            f"(actual {report['actual_bitrate_kbps']:.2f} kbps: .akc file sizes)"
        )
    elif args.baseline:
        what = f"baseline {report['baseline']}"
    else:
        what = f"{args.test} vs {args.ref}"
    if args.baseline == "opus":
        what += (
            f" {args.bitrate:g} kbps (actual {report['actual_bitrate_kbps']:.2f} kbps incl. Ogg container)"
        )
    print(f"{what}: {report['n']} files, {report['seconds']:.1f} s, PESQ {report['pesq_mode']}")
    for name in METRICS:
        mean, half = report[name], report["ci95"][name]
        value = "n/a" if mean is None else f"{mean:8.3f}" + ("" if half is None else f" ± {half:.3f}")
        print(f"  {name:<14}{value}")


def evaluate(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Per-file rows and the summary report of an ``audiokit eval`` command (parsed ``args``).

    Also writes ``--csv`` and ``--plot`` when given; prints nothing but progress bars.
    """
    _validate(args)
    pairs = pair_files(Path(args.ref), Path(args.test) if args.test else None, args.glob)
    desc = "eval " + (f"{args.codec} {args.bitrate:g} kbps" if args.codec else args.baseline or "")
    plotted: list[tuple[str, tuple[torch.Tensor, torch.Tensor]]] = []
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
            pairs, progress(results, desc.strip(), len(pairs), args.quiet), strict=True
        ):
            rows.append(row)
            if args.plot and ref is not None and len(plotted) < PLOT_ROWS and rate == (plot_rate or rate):
                plotted.append((pair.name, (ref, test)))
                plot_rate = rate
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report = _report(args, rows)
    if args.csv:
        _write_csv(args.csv, rows)
    if args.plot:
        title = f"{Path(args.codec).name} {args.bitrate:g} kbps" if args.codec else args.baseline or "test"
        spectrogram_comparison(plotted, plot_rate, args.plot, ("reference", title))
    return rows, report


def run(args: argparse.Namespace) -> int:
    _, report = evaluate(args)
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
        "--baseline sinc --input-rate HZ (band-limit and upsample), --baseline identity; or one of our "
        "codecs: --codec MODEL --bitrate KBPS (encode to .akc and decode, like audiokit encode/decode).",
    )
    parser.add_argument("ref", metavar="REF_DIR", help="reference audio: a directory or one file")
    parser.add_argument("test", metavar="TEST_DIR", nargs="?", help="test audio at the same relative paths")
    parser.add_argument("--baseline", choices=baselines.BASELINES, help="make the test audio from REF")
    parser.add_argument(
        "--codec",
        metavar="MODEL",
        help="code REF with this codec (shipped name, model directory or .safetensors) through .akc files",
    )
    parser.add_argument("--bitrate", type=float, metavar="KBPS", help="Opus or --codec bitrate in kbit/s")
    parser.add_argument("--input-rate", type=int, metavar="HZ", help="sinc baseline: band-limit to this rate")
    parser.add_argument("--glob", default="*", help="only reference files whose relative path matches")
    parser.add_argument(
        "--keep", metavar="DIR", help="save the test audio under DIR (and the .akc/.opus files it came from)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the means and CIs")
    parser.add_argument("--csv", metavar="FILE", help="write per-file scores to FILE")
    parser.add_argument("--plot", metavar="PNG", help="draw reference/test spectrograms of the first files")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.set_defaults(handler=run)
