"""``audiokit demo``: code the speech clips in ``samples/`` with a codec through real ``.akc`` files and
put the result next to Opus at the same bitrate: sizes, real bitrate, real-time factor, PESQ, STOI and
a spectrogram comparison."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from audiokit import baselines, io, metrics
from audiokit.cli.coding import load_codec
from audiokit.cli.eval import code_file, codec_bitrate
from audiokit.evaluation import find_audio, nanmean
from audiokit.models import Codec
from audiokit.models.codec import is_shipped
from audiokit.plots import spectrogram_comparison
from audiokit.progress import progress
from audiokit.provenance import write_json

DEFAULT_MODEL = "speech-16k"
DEFAULT_BITRATES = (1.5, 3.0, 6.0)
PLOT_ROWS = 4


def _opus_kbps(kbps: float) -> float:
    """Opus runs at the same bitrate, or at its minimum when ours is below it."""
    return max(kbps, baselines.OPUS_MIN_KBPS)


def _pesq_stoi(ref: torch.Tensor, test: torch.Tensor, rate: int) -> tuple[float, float]:
    """PESQ and STOI of ``(channels, samples)`` audio, averaged over channels (as ``audiokit eval``)."""
    pairs = list(zip(ref.double(), test.double(), strict=True))
    pesq = nanmean([metrics.pesq(r, t, rate).score for r, t in pairs])
    return pesq, nanmean([metrics.stoi(r, t, rate) for r, t in pairs])


def _warm_up(codec: Codec, weights_hash: str, bitrate_bps: float) -> None:
    """One untimed round trip of half a second, so that the first clip's timing has no set-up cost."""
    with tempfile.TemporaryDirectory(prefix="audiokit-demo-") as tmp:
        source = Path(tmp, "warm.wav")
        io.save(source, torch.zeros(1, codec.sample_rate // 2), codec.sample_rate)
        code_file(codec, weights_hash, source, Path(tmp, "w.akc"), Path(tmp, "w.wav"), bitrate_bps, None)


def _code_clip(
    codec: Codec, weights_hash: str, source: Path, out: Path, bitrates: list[float]
) -> tuple[list[dict], dict[float, tuple[torch.Tensor, torch.Tensor]]]:
    """Rows (one per bitrate) for one clip, and ``{kbps: (ours, opus)}`` audio for the figures."""
    rate = codec.sample_rate
    stem = source.stem
    wav, _ = io.load(source, sample_rate=rate)
    reference = out / f"{stem}.input.wav"  # the 16-bit input both codecs get, at the model's rate
    io.save(reference, wav, rate, subtype="PCM_16")
    ref, _ = io.load(reference)
    seconds = ref.shape[-1] / rate
    opus_runs: dict[float, tuple[baselines.BaselineOutput, float, float]] = {}
    rows, audio = [], {}
    for bps in bitrates:
        kbps = bps / 1000
        akc, decoded = out / f"{stem}.ours-{kbps:g}kbps.akc", out / f"{stem}.ours-{kbps:g}kbps.wav"
        start = time.perf_counter()
        size = code_file(codec, weights_hash, reference, akc, decoded, bps, None)
        compute = time.perf_counter() - start
        ours, _ = io.load(decoded)
        ours = baselines.fit_length(ours, ref.shape[-1])
        opus_kbps = _opus_kbps(kbps)
        if opus_kbps not in opus_runs:
            name = f"{stem}.opus-{opus_kbps:g}kbps"
            made = baselines.opus(ref, rate, opus_kbps, out / f"{name}.opus")
            io.save(out / f"{name}.wav", made.wav, rate, subtype="FLOAT")
            opus_runs[opus_kbps] = (made, *_pesq_stoi(ref, made.wav, rate))
        opus, opus_pesq, opus_stoi = opus_runs[opus_kbps]
        pesq, stoi = _pesq_stoi(ref, ours, rate)
        rows.append(
            {
                "clip": source.name,
                "seconds": seconds,
                "bitrate_kbps": kbps,
                "actual_bitrate_kbps": size * 8 / seconds / 1000,
                "input_bytes": reference.stat().st_size,
                "akc_bytes": size,
                "opus_bitrate_kbps": opus_kbps,
                "opus_actual_bitrate_kbps": opus.bitrate_bps / 1000,
                "opus_bytes": opus.coded_bytes,
                "compute_seconds": compute,
                "real_time_factor": compute / seconds,
                "pesq": pesq,
                "stoi": stoi,
                "opus_pesq": opus_pesq,
                "opus_stoi": opus_stoi,
            }
        )
        audio[kbps] = (ours, opus.wav)
    return rows, audio


def _mean_row(rows: list[dict]) -> dict:
    """Totals (sizes, time) and means (scores; NaN-free) over the clips of one bitrate."""
    seconds = sum(r["seconds"] for r in rows)
    compute = sum(r["compute_seconds"] for r in rows)

    return {
        "clip": f"all {len(rows)}",
        "seconds": seconds,
        "bitrate_kbps": rows[0]["bitrate_kbps"],
        "actual_bitrate_kbps": sum(r["akc_bytes"] for r in rows) * 8 / seconds / 1000,
        "input_bytes": sum(r["input_bytes"] for r in rows),
        "akc_bytes": sum(r["akc_bytes"] for r in rows),
        "opus_bitrate_kbps": rows[0]["opus_bitrate_kbps"],
        "opus_actual_bitrate_kbps": sum(r["opus_bytes"] for r in rows) * 8 / seconds / 1000,
        "opus_bytes": sum(r["opus_bytes"] for r in rows),
        "compute_seconds": compute,
        "real_time_factor": compute / seconds,
        **{key: nanmean([r[key] for r in rows]) for key in ("pesq", "stoi", "opus_pesq", "opus_stoi")},
    }


HEADER = (
    f"{'clip':<24}{'s':>5}{'kbps':>6}{'real':>6}{'input KiB':>10}{'.akc KiB':>9}{'.opus KiB':>10}"
    f"{'RTF':>7}   {'PESQ ours/Opus':<16}{'STOI ours/Opus':<14}"
)


def _format_row(row: dict) -> str:
    return (
        f"{row['clip'][:23]:<24}{row['seconds']:5.1f}{row['bitrate_kbps']:6.3g}"
        f"{row['actual_bitrate_kbps']:6.2f}{row['input_bytes'] / 1024:10.1f}{row['akc_bytes'] / 1024:9.2f}"
        f"{row['opus_bytes'] / 1024:10.2f}{row['real_time_factor']:7.3f}   "
        f"{row['pesq']:.3f} / {row['opus_pesq']:<8.3f}{row['stoi']:.3f} / {row['opus_stoi']:.3f}"
    )


def run(args: argparse.Namespace) -> int:
    files = find_audio(Path(args.samples), args.glob)
    codec, weights_hash = load_codec(args.model)
    bitrates = [codec_bitrate(codec, kbps) for kbps in args.bitrate]
    out = Path(args.out)
    shipped = is_shipped(args.model)
    say = (lambda *a: None) if args.quiet else print
    if not shipped:
        say(f"note: {args.model} is not a shipped model (weights loaded from a path, e.g. a checkpoint)")
    say(
        f"model {codec.name} ({'shipped' if shipped else args.model}, weights {weights_hash[:12]}), "
        f"{codec.sample_rate} Hz; {len(files)} clip(s) from {args.samples}; "
        f"real-time factor = encode+decode time / audio time on {torch.get_num_threads()} thread(s)"
    )
    _warm_up(codec, weights_hash, bitrates[0])
    rows: list[dict] = []
    figures: dict[float, list[tuple[str, list[torch.Tensor]]]] = {b / 1000: [] for b in bitrates}
    for source in progress(files, "demo", quiet=args.quiet):
        clip_rows, audio = _code_clip(codec, weights_hash, source, out, bitrates)
        rows += clip_rows
        ref, _ = io.load(out / f"{source.stem}.input.wav")
        for kbps, (ours, opus) in audio.items():
            if len(figures[kbps]) < PLOT_ROWS:
                figures[kbps].append((source.stem, [ref, ours, opus]))
    means = []
    for bps in bitrates:
        kbps = bps / 1000
        chosen = [r for r in rows if r["bitrate_kbps"] == kbps]
        means.append(_mean_row(chosen))
        opus_kbps = _opus_kbps(kbps)
        png = out / f"spectrograms-{kbps:g}kbps.png"
        spectrogram_comparison(
            figures[kbps],
            codec.sample_rate,
            png,
            ["reference", f"ours {kbps:g} kbps", f"Opus {opus_kbps:g} kbps"],
        )
        say(f"\n{kbps:g} kbps (Opus at {opus_kbps:g} kbps){'' if opus_kbps == kbps else ', its minimum'}:")
        say(HEADER)
        for row in chosen + [means[-1]]:
            say(_format_row(row))
        say(f"spectrograms: {png}")
    summary = {
        "model": codec.name,
        "model_path": None if shipped else args.model,
        "shipped": shipped,
        "weights_sha256": weights_hash,
        "sample_rate": codec.sample_rate,
        "torch_threads": torch.get_num_threads(),
        "clips": rows,
        "means": means,
    }
    write_json(out / "demo.json", summary)
    say(f"outputs (.akc, .opus, decoded .wav, demo.json) in {out}/")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="code the sample speech with a codec next to Opus: sizes, speed, PESQ/STOI, spectrograms",
        description="Encode and decode the speech clips of --samples (resampled to the model's rate) "
        "through .akc files, and Opus at the same bitrate (at 6 kbps when ours is below); print bitrates, "
        "file sizes, real-time factor and PESQ/STOI per clip and their mean; write spectrogram PNGs into "
        "--out.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped name, model directory or .safetensors (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--samples", default="samples", help="directory of clips (default samples)")
    parser.add_argument("--glob", default="speech_*", help="clips to use (default speech_*)")
    parser.add_argument(
        "--bitrate",
        type=float,
        nargs="+",
        default=list(DEFAULT_BITRATES),
        metavar="KBPS",
        help="bitrates in kbit/s (default 1.5 3 6)",
    )
    parser.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    parser.set_defaults(handler=run)
