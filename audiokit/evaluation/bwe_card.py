"""The bandwidth extender's model card (issue 22): on validation speech taken down to 8 kHz, LSD,
high-band LSD (above 4 kHz), PESQ-WB and STOI of ours and of the sinc baseline on the same inputs, in
one run; the same on telephone-coded 8 kHz inputs (G.711 mu-law and A-law, GSM 06.10 through ffmpeg's
libgsm where it has it); wideband pass-through (16 kHz input told its edge is at Nyquist, scored
against itself); before/after spectrogram PNGs of real narrowband recordings written beside the card;
the training record and the verdicts of a targets file on the conditions ``narrowband``, ``mu-law``,
``a-law``, ``gsm`` and ``wideband``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.bandwidth_extension import extend_audio, load_extender
from audiokit.data.manifest import manifest_path, read_manifest
from audiokit.errors import UsageError
from audiokit.evaluation.baselines import fit_length
from audiokit.evaluation.card_common import (
    CardOptions,
    build_condition_card,
    evenly_spaced,
    link_subset,
    map_jobs,
)
from audiokit.evaluation.card_markdown import (
    header_lines,
    reproduce_lines,
    shown_path,
    target_lines,
    training_lines,
    value_cell,
)
from audiokit.evaluation.paired import EvalRequest, evaluate, report
from audiokit.evaluation.plots import spectrogram_comparison
from audiokit.evaluation.scoring import score_pair
from audiokit.models.bwe import BandwidthExtender
from audiokit.train.narrowband import a_law, mu_law

INPUT_RATE = 8000
SHOWN = (("lsd", "LSD"), ("lsd_high", "high-band LSD"), ("pesq", "PESQ-WB"), ("stoi", "STOI"))
CONDITIONS = {
    "narrowband": "8 kHz (soxr HQ down)",
    "mu-law": "8 kHz, G.711 mu-law",
    "a-law": "8 kHz, G.711 A-law",
    "gsm": "8 kHz, GSM 06.10 (ffmpeg libgsm)",
}
"""The band-limited inputs of the table: ours and sinc on each."""
REPOSITORY = Path(__file__).resolve().parents[2]
SAMPLE_8K = REPOSITORY / "samples" / "speech_fr_8k_a.wav"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies in it (the 8 kHz sample), else as given."""
    return (
        str(path.resolve().relative_to(REPOSITORY))
        if path.resolve().is_relative_to(REPOSITORY)
        else str(path)
    )


def gsm_missing() -> str | None:
    """Why GSM-coded inputs cannot be made here (no ffmpeg, or one without the libgsm encoder), or None."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "no ffmpeg on this machine"
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return None if "libgsm" in encoders else "this ffmpeg has no libgsm encoder (ffmpeg -encoders)"


def gsm(x: np.ndarray) -> np.ndarray:
    """GSM 06.10 round trip (ffmpeg ``-c:a libgsm``) of ``x (channels, samples)`` at 8 kHz, each channel
    on its own; same shape."""
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    out = []
    with tempfile.TemporaryDirectory(prefix="audiokit-gsm-") as tmp:
        source, coded, decoded = Path(tmp, "in.wav"), Path(tmp, "x.gsm"), Path(tmp, "out.wav")
        for channel in x:
            io.save(source, np.clip(channel, -1, 1)[None], INPUT_RATE, subtype="PCM_16")
            for command in (
                [ffmpeg, "-v", "error", "-y", "-i", source, "-c:a", "libgsm", "-f", "gsm", coded],
                [ffmpeg, "-v", "error", "-y", "-f", "gsm", "-ar", str(INPUT_RATE), "-i", coded, decoded],
            ):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise UsageError(f"ffmpeg GSM round trip failed ({' '.join(done.stderr.split())[-300:]})")
            out.append(fit_length(io.load(decoded, channels=1)[0], x.shape[-1])[0].numpy())
    return np.stack(out)


CODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mu-law": mu_law, "a-law": a_law, "gsm": gsm}


@dataclass(frozen=True, kw_only=True)
class BweCardRequest(CardOptions):
    """A bandwidth-extender card (:class:`~audiokit.evaluation.card_common.CardOptions`) measured on the
    wideband references ``valid`` matching ``glob`` (``max_files``: that many spread over them, None:
    all), with spectrograms of ``narrowband_files`` real narrowband recordings from ``narrowband`` (files,
    folders or manifests; empty: :func:`narrowband_recordings`'s default) written beside the card."""

    valid: Path
    glob: str = "*"
    max_files: int | None = None
    narrowband: tuple[Path, ...] = ()
    narrowband_files: int = 3

    def data_options(self) -> list[tuple[str, object]]:
        return [
            ("--valid", self.valid),
            ("--glob", self.glob),
            ("--max-files", self.max_files),
            ("--narrowband", self.narrowband or None),
            ("--narrowband-files", self.narrowband_files),
        ]

    def data_paths(self) -> list[str]:
        return [str(self.valid), *map(str, self.narrowband)]


def narrowband_recordings(paths: tuple[Path, ...], count: int) -> list[Path]:
    """``count`` real narrowband recordings spread over ``paths`` (audio files, folders, ``.jsonl``
    manifests); by default the prepared ``valid_speech_nb`` manifest, else ``train_speech_nb``, else the
    repository's 8 kHz sample prompt."""
    if not paths:
        prepared = [manifest_path(split, "speech_nb") for split in ("valid", "train")]
        paths = (next((p for p in prepared if p.is_file()), SAMPLE_8K),)
    found: list[Path] = []
    for path in paths:
        if path.suffix == ".jsonl":
            try:
                found += [Path(row["path"]) for row in read_manifest(path)]
            except ValueError as exc:  # names file:line
                raise UsageError(f"--narrowband {exc}") from None
        else:
            found += io.find_audio(path)
    return evenly_spaced(sorted(found), count)


def _scored(name: str, ref: torch.Tensor, test: torch.Tensor, rate: int, high_hz: float | None) -> dict:
    row = {"file": name, "sample_rate": rate, "seconds": ref.shape[-1] / rate}
    return row | score_pair(ref, fit_length(test, ref.shape[-1]), rate, high_hz)


def coded_rows(task: tuple[str, Path, str, str]) -> tuple[dict, dict]:
    """Rows of ours and of sinc for one reference ``(name, path, weights, coding)``: taken down to 8 kHz
    (soxr HQ), through ``CODERS[coding]``, then extended by ours / resampled up by soxr."""
    name, path, weights, coding = task
    model, _ = load_extender(weights)
    ref, rate = io.load(path, sample_rate=model.sample_rate, channels=1)
    low = CODERS[coding](np.clip(io.resample(ref.numpy().T, rate, INPUT_RATE).T, -1, 1))
    ours = extend_audio(model, torch.from_numpy(np.ascontiguousarray(low)), INPUT_RATE)
    sinc = torch.from_numpy(np.ascontiguousarray(io.resample(low.T, INPUT_RATE, rate).T))
    high = INPUT_RATE / 2
    return _scored(name, ref, ours, rate, high), _scored(name, ref, sinc, rate, high)


def wideband_row(task: tuple[str, Path, str]) -> dict:
    """Row of ours on one wideband reference ``(name, path, weights)`` told its edge is at Nyquist."""
    name, path, weights = task
    model, _ = load_extender(weights)
    ref, rate = io.load(path, sample_rate=model.sample_rate, channels=1)
    with torch.no_grad():
        out = model(ref[None], float(rate / 2))[0]
    return _scored(name, ref, out, rate, None)


def spectrograms(request: BweCardRequest, model: BandwidthExtender) -> list[dict]:
    """Before/after spectrogram PNGs of the real narrowband recordings, written to ``request.out`` as
    ``<card name>-narrowband-<i>.png``; what each shows."""
    name = request.name or model.name
    shown = []
    for i, path in enumerate(narrowband_recordings(request.narrowband, request.narrowband_files), 1):
        wav, rate = io.load(path)
        after = extend_audio(model, wav, rate)
        up = io.resample(wav.numpy().T, rate, model.sample_rate).T
        before = fit_length(torch.from_numpy(np.ascontiguousarray(up)), after.shape[-1])
        png = request.out / f"{name}-narrowband-{i}.png"
        titles = (f"input ({rate} Hz, soxr to {model.sample_rate})", f"{model.name} output")
        spectrogram_comparison([(path.stem, (before, after))], model.sample_rate, png, titles)
        shown.append(
            {"source": _shown(path), "png": png.name, "input_rate": rate, "seconds": wav.shape[-1] / rate}
        )
    return shown


def measure(
    request: BweCardRequest, model: BandwidthExtender
) -> tuple[dict, dict[str, dict[str, list[dict]]]]:
    """The card's evaluation section (reports per condition and system, commands, what was skipped, the
    spectrograms, which it writes) and the per-file rows by condition and system, for paired
    comparisons."""
    files = io.find_audio(request.valid, request.glob)
    names = [str(p.relative_to(request.valid)) if p != request.valid else p.name for p in files]
    names = evenly_spaced(names, request.max_files)
    skipped = {"gsm": why} if (why := gsm_missing()) else {}
    conditions: dict[str, dict] = {}
    rows: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="audiokit-card-") as tmp:
        valid, glob = request.valid, request.glob
        if request.max_files is not None and request.valid.is_dir():
            (valid,), glob = link_subset((request.valid,), names, Path(tmp)), "*"
        plain = EvalRequest(
            valid,
            extender=request.weights,
            input_rate=INPUT_RATE,
            glob=glob,
            jobs=request.jobs,
            quiet=request.quiet,
        )
        ours_rows, ours = evaluate(plain)
        sinc_rows = [{"file": r["file"], **{m: r[f"sinc_{m}"] for m in plain.metrics}} for r in ours_rows]
        conditions["narrowband"] = {"ours": ours, "sinc": ours["sinc"]}
        rows["narrowband"] = {"ours": ours_rows, "sinc": sinc_rows}
    paths = [request.valid / n if request.valid.is_dir() else request.valid for n in names]
    summary = EvalRequest(request.valid, input_rate=INPUT_RATE)
    for coding in (c for c in CODERS if c not in skipped):
        tasks = [(n, p, request.weights, coding) for n, p in zip(names, paths, strict=True)]
        pairs = map_jobs(coded_rows, tasks, request.jobs, f"card {coding}", request.quiet, lambda t: t[0])
        rows[coding] = {"ours": [o for o, _ in pairs], "sinc": [s for _, s in pairs]}
        conditions[coding] = {system: report(summary, rows[coding][system]) for system in ("ours", "sinc")}
    tasks = [(n, p, request.weights) for n, p in zip(names, paths, strict=True)]
    wide = map_jobs(wideband_row, tasks, request.jobs, "card wideband", request.quiet, lambda t: t[0])
    rows["wideband"] = {"ours": wide}
    conditions["wideband"] = {"ours": report(EvalRequest(request.valid), wide)}
    argv = ["-m", request.weights, "--input-rate", str(INPUT_RATE), "--glob", request.glob]
    argv += ["--jobs", str(request.jobs), "--json"]
    command = " ".join(["audiokit", "eval", shown_path(str(request.valid)), *map(shlex.quote, argv)])
    section = {
        "valid": str(request.valid),
        "glob": request.glob,
        "max_files": request.max_files,
        "files": ours["n"],
        "seconds": ours["seconds"],
        "input_rate": INPUT_RATE,
        "jobs": request.jobs,
        "conditions": conditions,
        "skipped": skipped,
        "commands": {"narrowband": command},
        "spectrograms": spectrograms(request, model),
    }
    return section, rows


def build_bwe_card(request: BweCardRequest) -> dict:
    """Measure and collect everything the card holds (see the module docstring); writes the PNGs."""
    return build_condition_card("bwe", request, load_extender, measure)


def render_bwe_markdown(card: dict) -> str:
    """The bandwidth-extender card as Markdown (every number is also in the JSON beside it)."""
    e = card["evaluation"]
    subset = f" (`--max-files {e['max_files']}`: files spread over them)" if e["max_files"] else ""
    lines = [
        *header_lines(card),
        "## Quality on the validation speech taken down to 8 kHz",
        "",
        f"{e['files']} files{subset}, {e['seconds'] / 60:.1f} min: `{shown_path(e['valid'], quote=False)}` "
        f"(`--glob {e['glob']}`), mean ± 95 % CI over files; ours and sinc (soxr HQ back up to the "
        "references' rate) on the same inputs in the same run. LSD as AERO defines it; high-band LSD over "
        f"the bins above {e['input_rate'] / 2000:g} kHz.",
        "",
        "| input | system | " + " | ".join(title for _, title in SHOWN) + " |",
        "|---|---" + "|---" * len(SHOWN) + "|",
    ]
    for condition, label in CONDITIONS.items():
        if condition in e["skipped"]:
            lines.append(f"| {label} | skipped: {e['skipped'][condition]} |" + " |" * len(SHOWN))
            continue
        for system in ("ours", "sinc"):
            values = " | ".join(value_cell(e["conditions"][condition][system], m) for m, _ in SHOWN)
            lines.append(f"| {label} | {system} | {values} |")
    wide = e["conditions"]["wideband"]["ours"]
    lines += [
        "",
        f"Wideband pass-through: the same {wide['n']} references at 16 kHz, told their edge is at Nyquist, "
        f"scored against themselves: PESQ-WB {value_cell(wide, 'pesq')}, LSD {value_cell(wide, 'lsd')}.",
        "",
        "## Real narrowband recordings",
        "",
    ]
    for shot in e["spectrograms"]:
        source = shown_path(shot["source"], quote=False)
        lines += [
            f"`{source}` ({shot['input_rate']} Hz, {shot['seconds']:.1f} s), before and after:",
            "",
            f"![{Path(shot['source']).stem}]({shot['png']})",
            "",
        ]
    lines += target_lines(card)
    lines += training_lines(card)
    lines += reproduce_lines(
        card,
        "audiokit data prepare --roles speech --split valid",
        [*e["commands"].values(), "# the coded and wideband rows, and the PNGs: the card command below"],
    )
    return "\n".join(lines) + "\n"
