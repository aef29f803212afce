"""Our codec next to Opus on a folder of clips, through real ``.akc`` files (what ``audiokit demo`` runs):
sizes, real bitrates, real-time factor, PESQ and STOI per clip and bitrate, and spectrogram figures."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from audiokit import io
from audiokit.coding import code_file, codec_bitrate, load_codec
from audiokit.evaluation import baselines, metrics
from audiokit.evaluation.plots import spectrogram_comparison
from audiokit.evaluation.stats import nanmean
from audiokit.io import find_audio
from audiokit.models import Codec, is_shipped
from audiokit.progress import progress
from audiokit.provenance import write_json
from audiokit.tools import OPUS_MIN_KBPS

PLOT_ROWS = 4


def opus_kbps_for(kbps: float) -> float:
    """Opus runs at the same bitrate, or at its minimum when ours is below it."""
    return max(kbps, OPUS_MIN_KBPS)


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
        opus_kbps = opus_kbps_for(kbps)
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


def side_by_side(
    model: str,
    samples: Path,
    glob: str,
    bitrates_kbps: Sequence[float],
    out: Path,
    quiet: bool = True,
    exclude: Path | None = None,
) -> dict:
    """Code every clip of ``samples`` matching ``glob`` (resampled to the model's rate) at each bitrate
    (kbit/s) with ``model`` and with Opus (at its 6 kbps minimum below that), into ``out``; none under the
    folder ``exclude`` (an earlier demo's outputs inside ``samples``).

    ``out`` gets per clip the 16-bit input, the ``.akc``/``.opus`` files and their decoded ``.wav``s,
    one ``spectrograms-<K>kbps.png`` per bitrate and ``demo.json``: the returned summary (``clips``:
    a row per clip and bitrate; ``means``: one per bitrate; ``figures``: the PNGs' names in ``out``).
    """
    files = find_audio(Path(samples), glob, exclude=exclude)
    codec, weights_hash = load_codec(model)
    bitrates = [codec_bitrate(codec, kbps, model=model) for kbps in bitrates_kbps]
    shipped = is_shipped(model)
    _warm_up(codec, weights_hash, bitrates[0])
    rows: list[dict] = []
    figures: dict[float, list[tuple[str, list[torch.Tensor]]]] = {b / 1000: [] for b in bitrates}
    for source in progress(files, "demo", quiet=quiet, label=lambda path: path.name):
        clip_rows, audio = _code_clip(codec, weights_hash, source, out, bitrates)
        rows += clip_rows
        ref, _ = io.load(out / f"{source.stem}.input.wav")
        for kbps, (ours, opus) in audio.items():
            if len(figures[kbps]) < PLOT_ROWS:
                figures[kbps].append((source.stem, [ref, ours, opus]))
    means, pngs = [], {}
    for bps in bitrates:
        kbps = bps / 1000
        means.append(_mean_row([r for r in rows if r["bitrate_kbps"] == kbps]))
        png = out / f"spectrograms-{kbps:g}kbps.png"
        titles = ["reference", f"ours {kbps:g} kbps", f"Opus {opus_kbps_for(kbps):g} kbps"]
        spectrogram_comparison(figures[kbps], codec.sample_rate, png, titles)
        pngs[f"{kbps:g}"] = png.name
    summary = {
        "model": codec.name,
        "model_path": None if shipped else model,
        "shipped": shipped,
        "weights_sha256": weights_hash,
        "sample_rate": codec.sample_rate,
        "torch_threads": torch.get_num_threads(),
        "clips": rows,
        "means": means,
        "figures": pngs,
    }
    write_json(out / "demo.json", summary)
    return summary
