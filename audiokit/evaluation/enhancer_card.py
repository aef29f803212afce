"""The enhancer's model card (issue 20): on the fixed noisy validation set (``audiokit data mix``), per
SNR and overall, PESQ-WB, STOI and SI-SDR (mean and 95 % CI over files) of the noisy input, ours,
RNNoise and spectral gating, all in one run; ours on the clean speech of that set (the output scored
against its input: does it leave clean speech alone?) and on digital silence (the output's peak level);
the training record, and the verdicts of a targets file on the conditions ``noisy``, ``clean`` and
``silence`` (:func:`audiokit.evaluation.targets.condition_verdicts`)."""

from __future__ import annotations

import math
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from audiokit.data.manifest import read_jsonl
from audiokit.enhancement import load_enhancer
from audiokit.errors import UsageError
from audiokit.evaluation.card_common import (
    CardOptions,
    build_condition_card,
    evenly_spaced,
    link_subset,
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
from audiokit.evaluation.targets import PEAK_DBFS
from audiokit.models.enhancer import Enhancer

SYSTEMS = {
    "noisy": ("noisy input", []),
    "ours": ("ours", ["-m"]),
    "rnnoise": ("RNNoise", ["--baseline", "rnnoise"]),
    "gating": ("spectral gating", ["--baseline", "gating"]),
}
"""Each system of the table: its label and its ``audiokit eval CLEAN NOISY`` options (ours: + weights)."""
SHOWN = (("pesq", "PESQ-WB"), ("stoi", "STOI"), ("si_sdr", "SI-SDR (dB)"))
SILENCE_SECONDS = 10.0
PEAK_FLOOR_DBFS = -200.0
"""What an all-zero output's peak level is reported as (dBFS)."""


@dataclass(frozen=True, kw_only=True)
class EnhancerCardRequest(CardOptions):
    """An enhancer card (:class:`~audiokit.evaluation.card_common.CardOptions`) measured on the noisy set
    ``noisy_set`` (``clean/``, ``noisy/``, ``clips.jsonl``; ``max_files``: that many clips spread over
    it and its SNRs, None: all)."""

    noisy_set: Path
    max_files: int | None = None

    def data_options(self) -> list[tuple[str, object]]:
        return [("--noisy-set", self.noisy_set), ("--max-files", self.max_files)]

    def data_paths(self) -> list[str]:
        return [str(self.noisy_set)]


def clip_snrs(noisy_set: Path) -> dict[str, float]:
    """The SNR (dB) of each clip of a noisy set by its relative path, from its ``clips.jsonl``."""
    path = noisy_set / "clips.jsonl"
    if not path.is_file():
        raise UsageError(f"--noisy-set {noisy_set}: no clips.jsonl (make the set with `audiokit data mix`)")
    try:
        return {row["name"]: float(row["snr_db"]) for row in read_jsonl(path)}
    except (ValueError, KeyError, TypeError) as exc:  # a cut or hand-edited list
        problem = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"{path}: not a clip list of `audiokit data mix` ({problem})") from None


def spread_over_snrs(snrs: dict[str, float], count: int) -> list[str]:
    """``count`` clip names, as many of each SNR as can be (the lower SNRs take the remainder), spread
    evenly over the clips of that SNR in name order."""
    levels = sorted(set(snrs.values()))
    names = []
    for i, snr in enumerate(levels):
        share = count // len(levels) + (i < count % len(levels))
        names += evenly_spaced(sorted(n for n, s in snrs.items() if s == snr), share)
    return sorted(names)


def silence_peak_dbfs(model: Enhancer, seconds: float = SILENCE_SECONDS) -> float:
    """Peak level (dBFS, at least :data:`PEAK_FLOOR_DBFS`) of the enhancer's output on ``seconds`` of
    digital silence at its rate: the louder of offline and streamed in 10 ms chunks."""
    silence = torch.zeros(1, 1, round(seconds * model.sample_rate))
    with torch.no_grad():
        offline = model.enhance(silence)
        session, chunk = model.stream(1), model.sample_rate // 100
        streamed = [session.push(silence[..., i : i + chunk]) for i in range(0, silence.shape[-1], chunk)]
        streamed.append(session.flush())
    peak = max(float(offline.abs().max()), float(torch.cat(streamed, -1).abs().max()))
    return max(20 * math.log10(peak), PEAK_FLOOR_DBFS) if peak > 0 else PEAK_FLOOR_DBFS


def _request(system: str, weights: str, clean: Path, noisy: Path, jobs: int, quiet: bool) -> EvalRequest:
    return EvalRequest(
        clean,
        test=noisy,
        enhancer=weights if system == "ours" else None,
        baseline=system if system not in ("noisy", "ours") else None,
        jobs=jobs,
        quiet=quiet,
    )


def _commands(weights: str, noisy_set: Path, jobs: int) -> dict[str, str]:
    """The ``audiokit eval`` command behind each row of the full set (and the silence check)."""
    clean, noisy = (shown_path(str(noisy_set / part)) for part in ("clean", "noisy"))
    commands = {}
    for system, (_, options) in SYSTEMS.items():
        argv = [*options, weights] if system == "ours" else options
        argv = [*map(shlex.quote, argv), "--jobs", str(jobs), "--json"]
        commands[system] = " ".join(["audiokit", "eval", clean, noisy, *argv])
    commands["clean"] = " ".join(["audiokit", "eval", clean, clean, "-m", shlex.quote(weights), "--json"])
    code = (
        "from audiokit.enhancement import load_enhancer; "
        "from audiokit.evaluation.enhancer_card import silence_peak_dbfs; "
        f"print(silence_peak_dbfs(load_enhancer({weights!r})[0]))"
    )
    commands["silence"] = "python -c " + shlex.quote(code)
    return commands


def measure(request: EnhancerCardRequest, model: Enhancer) -> tuple[dict, dict[str, dict[str, list[dict]]]]:
    """The card's evaluation section (reports per condition and system, per SNR, the commands) and the
    per-file rows by condition and system, for paired comparisons."""
    snrs = clip_snrs(request.noisy_set)
    parts = (request.noisy_set / "clean", request.noisy_set / "noisy")
    with tempfile.TemporaryDirectory(prefix="audiokit-card-") as tmp:
        if request.max_files is not None:
            names = spread_over_snrs(snrs, request.max_files)
            parts = tuple(link_subset(parts, names, Path(tmp)))
        requests = {s: _request(s, request.weights, *parts, request.jobs, request.quiet) for s in SYSTEMS}
        rows, reports = {}, {}
        for system, eval_request in requests.items():
            rows[system], reports[system] = evaluate(eval_request)
        clean_request = EvalRequest(
            parts[0], test=parts[0], enhancer=request.weights, jobs=request.jobs, quiet=request.quiet
        )
        clean_rows, clean_report = evaluate(clean_request)
    by_snr = {}
    for snr in sorted({snrs[r["file"]] for r in rows["noisy"] if r["file"] in snrs}):
        by_snr[f"{snr:g}"] = {
            system: report(requests[system], [r for r in rows[system] if snrs.get(r["file"]) == snr])
            for system in SYSTEMS
        }
    peak = silence_peak_dbfs(model)
    silence = {"n": 1, "seconds": SILENCE_SECONDS, PEAK_DBFS: round(peak, 3)}
    section = {
        "noisy_set": str(request.noisy_set),
        "max_files": request.max_files,
        "files": reports["noisy"]["n"],
        "seconds": reports["noisy"]["seconds"],
        "jobs": request.jobs,
        "by_snr": by_snr,
        "conditions": {"noisy": reports, "clean": {"ours": clean_report}, "silence": {"ours": silence}},
        "commands": _commands(request.weights, request.noisy_set, request.jobs),
    }
    per_file = {
        "noisy": rows,
        "clean": {"ours": clean_rows},
        "silence": {"ours": [{"file": "silence", PEAK_DBFS: peak}]},
    }
    return section, per_file


def build_enhancer_card(request: EnhancerCardRequest) -> dict:
    """Measure and collect everything the card holds (see the module docstring)."""
    return build_condition_card("enhancer", request, load_enhancer, measure)


def _table(by_condition: dict[str, dict[str, dict]]) -> list[str]:
    lines = [
        "| SNR (dB) | system | " + " | ".join(title for _, title in SHOWN) + " |",
        "|---|---" + "|---" * len(SHOWN) + "|",
    ]
    for snr, systems in by_condition.items():
        for system, (label, _) in SYSTEMS.items():
            values = " | ".join(value_cell(systems[system], metric) for metric, _ in SHOWN)
            lines.append(f"| {snr} | {label} | {values} |")
    return lines


def render_enhancer_markdown(card: dict) -> str:
    """The enhancer card as Markdown (every number is also in the JSON beside it)."""
    e = card["evaluation"]
    noisy_set = shown_path(e["noisy_set"], quote=False)
    subset = (
        f" (`--max-files {e['max_files']}`: clips spread over the set and its SNRs)" if e["max_files"] else ""
    )
    clean, silence = e["conditions"]["clean"]["ours"], e["conditions"]["silence"]["ours"]
    lines = [
        *header_lines(card),
        "## Quality on the fixed noisy validation set",
        "",
        f"{e['files']} files{subset}, {e['seconds'] / 60:.1f} min: `{noisy_set}` (validation speech mixed "
        "with validation noise at the SNR its `clips.jsonl` gives), mean ± 95 % CI over files, every system "
        "in the same run. RNNoise: `pyrnnoise` at 48 kHz, its delay removed; spectral gating: "
        "`noisereduce` with its defaults.",
        "",
        *_table({**e["by_snr"], "all": e["conditions"]["noisy"]}),
        "",
        "## Clean speech and silence",
        "",
        f"- Clean speech in (the {clean['n']} clean clips of the set): ours against its own input, PESQ-WB "
        f"{value_cell(clean, 'pesq')}, STOI {value_cell(clean, 'stoi')}, SI-SDR "
        f"{value_cell(clean, 'si_sdr')} dB.",
        f"- Digital silence in ({silence['seconds']:g} s, offline and streamed in 10 ms chunks): output peak "
        f"{silence[PEAK_DBFS]:.1f} dBFS (an all-zero output reads {PEAK_FLOOR_DBFS:g}).",
        "",
    ]
    lines += target_lines(card)
    lines += training_lines(card)
    prepare = (
        "audiokit data prepare --roles speech,noise --split valid && "
        f"audiokit data mix --out {shown_path(e['noisy_set'])}"
    )
    lines += reproduce_lines(card, prepare, e["commands"].values())
    return "\n".join(lines) + "\n"
