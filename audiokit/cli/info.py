"""``audiokit info FILE...``: rate, channels, duration, codec, peak, RMS, bandwidth and the count of
NaN or infinite samples of audio files; model (and which shipped version of its weights),
entropy-coding model, bitrate, duration and original rate of .akc files; family, name (and shipped
version), step, parameters, rate, hop, latency and bitrates of a model's .safetensors weights (or of the
shipped weights a name gives: enhance-16k, enhance-16k@1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiokit import io
from audiokit.cli.batch import run_batch
from audiokit.cli.options import add_raw_options, doc_text, raw_format
from audiokit.coding import entropy_model_file
from audiokit.errors import UsageError
from audiokit.evaluation.describe import describe
from audiokit.io import RawFormat
from audiokit.models.archive import decoding_version, model_version
from audiokit.models.base import WEIGHTS_DIR, is_shipped, is_shipped_name, registered_names, resolve_weights


def _fmt_db(value: float | None) -> str:
    return "-inf" if value is None else f"{value:.1f}"


def _weights_line(row: dict) -> str:
    version = row["model_version"] or f"weights {row['weights_sha256'][:12]}"
    step = "" if row["step"] is None else f", step {row['step']}"
    rates = ""
    if row["family"] == "codec":
        kbps = row["bitrates_kbps"]
        rates = f", {kbps[0]:g}-{kbps[-1]:g} kbps ({row['codebooks']} codebooks of {row['codebook_size']})"
    return (
        f"{row['path']}: {row['family']} weights, {row['model']} ({version}{step}), "
        f"{row['parameters']:,} parameters ({row['bytes'] / 1e6:.1f} MB), {row['sample_rate']} Hz, "
        f"{row['channels']} ch, hop {row['hop_length']} samples, latency {row['latency_ms']:g} ms{rates}"
    )


def _line(row: dict) -> str:
    if row.get("format") == "weights":
        return _weights_line(row)
    if row.get("format") == "entropy-prior":
        version = row["model_version"] or f"weights {str(row['weights_sha256'])[:12]}"
        return (
            f"{row['path']}: entropy-coding prior (--entropy) of {row['model']}'s codes ({version}), "
            f"model id {row['entropy_model_id']}, {row['bytes'] / 1e6:.1f} MB; trained on {row['trained_on']}"
        )
    if row.get("format") == "train-state":
        return (
            f"{row['path']}: shard of a packed training state (step {row['step']}, {row['shards']} "
            f"shard(s)); `audiokit checkpoint unpack {row['folder']} RUN_DIR` restores the run to train on"
        )
    if row.get("format") == "checkpoint":
        return (
            f"{row['path']}: training checkpoint, task {row['task']}, {row['model']} (step {row['step']}), "
            f"{row['bytes'] / 1e6:.1f} MB (weights, EMA and optimiser state); "
            f"`audiokit train RECIPE --run-dir {row['run_dir']} --resume` continues it, "
            f"`audiokit info {row['run_dir']}` describes its weights"
        )
    if row.get("format") == "akc":
        original = f"{row['original_samples']} samples at {row['original_sample_rate']} Hz"
        version = row["model_version"] or "weights never shipped"
        decoder = ""
        if row["decoded_by"] and row["decoded_by"] != row["model_version"]:
            decoder = f"; decodes with {row['decoded_by']}, which writes the same codes"
        coding = ""
        if row["entropy_coded"]:
            coding = f", entropy-coded ({row['entropy_model'] or 'a model this package lacks'})"
        stored = "" if row["actual_kbps"] is None else f"; {row['actual_kbps']:g} kbps as stored"
        return (
            f"{row['path']}: .akc v{row['version']}{coding}, {row['model']} ({version}, weights "
            f"{row['weights_sha256'][:12]}{decoder}), "
            f"{row['bitrate_kbps']:g} kbps ({row['codebooks']} codebooks x {row['channels']} ch{stored}), "
            f"{row['duration_s']:.3f} s, original {original}"
        )
    bad = row["nonfinite_samples"]
    warning = f"; {bad} NaN or infinite sample(s), which audiokit's other commands refuse" if bad else ""
    return (
        f"{row['path']}: {row['sample_rate']} Hz, {row['channels']} ch, {row['duration_s']:.3f} s "
        f"({row['samples']} samples), {row['codec']}, peak {_fmt_db(row['peak_dbfs'])} dBFS, "
        f"RMS {_fmt_db(row['rms_dbfs'])} dBFS, bandwidth ~{row['bandwidth_hz'] / 1000:.1f} kHz{warning}"
    )


def _describe(path: str, raw: RawFormat | None) -> dict:
    """:func:`describe`, plus for an ``.akc`` file the shipped version of its weights (``name@version``,
    None for weights never shipped), the installed version that decodes it (``decoded_by``: the same, or
    a later one that writes the same codes; None when none is installed), whether it is entropy-coded
    and the file of the entropy-coding model it names (None when this package lacks it). A shipped
    model's name (``name@version`` included) that is not a file describes its weights."""
    named = is_shipped_name(path) or path.partition("@")[0] in registered_names()  # `name@9` says why not
    source = str(resolve_weights(path)) if named and not Path(path).exists() else path
    with io.readable_path(source) as readable:  # `-`: standard input, read whole into a temporary file
        row = describe(readable, raw)
    row["path"] = io.shown_name(path)
    if row.get("format") in ("weights", "entropy-prior"):
        row["model_version"] = model_version(str(row["model"]), str(row["weights_sha256"]))
    if row.get("format") == "weights" and row["model_version"] is None and is_shipped(row["model"]):
        shipped = WEIGHTS_DIR / f"{row['model']}.json"  # the installed shipped weights, where there are any
        if shipped.is_file() and json.loads(shipped.read_text()).get("sha256") == row["weights_sha256"]:
            row["model_version"] = f"shipped {row['model']}"
    if row.get("format") == "akc":
        row["model_version"] = model_version(row["model"], row["weights_sha256"])
        row["decoded_by"] = decoding_version(row["model"], row["weights_sha256"])
        row["entropy_coded"] = row["version"] >= 3
        row["entropy_model"] = (
            entropy_model_file(row["model"], row["weights_sha256"], row["entropy_model_id"])
            if row["entropy_coded"]
            else None
        )
    return row


def _files(names: list[str]) -> list[str]:
    """``names`` with each folder replaced by the audio and ``.akc`` files under it (sorted, recursive)
    and the model weights it holds as a run directory does (``model.safetensors``)."""
    files = []
    for name in names:
        if not io.is_stdio(name) and Path(name).is_dir():
            weights = Path(name) / "model.safetensors"
            files += [str(weights)] if weights.is_file() else []
            extensions = (*io.AUDIO_EXTENSIONS, ".akc")
            try:
                files += [str(p) for p in io.find_audio(Path(name), extensions=extensions)]
            except UsageError:  # no audio in it: a run directory is its weights alone
                if not weights.is_file():
                    raise
        else:
            files.append(name)
    return files


def run(args: argparse.Namespace) -> int:
    raw = raw_format(args)
    files = _files(args.files)
    batch = run_batch(
        files,
        lambda path: _describe(path, raw),
        "info",
        io.shown_name,
        quiet=args.quiet,
        raise_single=not args.json,
    )
    rows = batch.done
    if args.json:
        failed = {name: {"path": name, "error": line} for name, line in batch.failed}
        described = iter(rows)  # in argument order, each failed file where it was named
        ordered = [failed.get(io.shown_name(name)) or next(described) for name in files]
        single = len(files) == 1 and files == args.files
        print(json.dumps(ordered[0] if single else ordered, indent=2))
    else:
        for row in rows:
            print(_line(row))
    if batch.failed and len(files) > 1:
        print(f"info: {batch.count}", file=sys.stderr)
    return batch.exit_code


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "info",
        parents=[common],
        help="describe audio files",
        description=doc_text(__doc__) + " Reads m4a/aac/mp4, webm and whatever else ffmpeg "
        "decodes, and headerless PCM with --raw-rate/--raw-format.",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audio or .akc files (or folders of them), or a model's .safetensors weights (or a shipped "
        "model's name: enhance-16k, enhance-16k@1)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON (an object; a list for several files or a folder, a failed file as {path, error})",
    )
    add_raw_options(parser)
    parser.set_defaults(handler=run)
