"""Model cards: a codec measured side by side with Opus on validation speech, with its training record
and the targets it is held to (passed in as a file, :mod:`audiokit.evaluation.targets`).

:func:`build_card` runs :func:`~audiokit.evaluation.evaluate` for the codec at each bitrate and for Opus at
the same bitrates (Opus below its 6 kbps minimum is "n/a" and the codec is compared with Opus 6 kbps
instead) and at any others asked for, the edge-case checks, the codebook health
(:func:`codebook_health_section`), the files' size with and without entropy coding and a spectrogram
figure (:mod:`audiokit.evaluation.codec_card`), reads what
the trainer wrote into the run directory (``run.json``, ``recipe.yaml``, ``metrics.jsonl``,
``eval.jsonl``) and the recipe's training manifests;
:func:`write_card` writes ``<out>/<name>.json`` and ``<out>/<name>.md`` atomically. Every number in
the card comes with the command that reproduces it, and the card with the ``audiokit card`` command
that regenerates it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audiokit import io
from audiokit.coding import codec_bitrate, load_codec
from audiokit.evaluation.bwe_card import render_bwe_markdown
from audiokit.evaluation.card_common import CardOptions, model_weights
from audiokit.evaluation.card_markdown import render_markdown, shown_path
from audiokit.evaluation.codec_card import entropy_section, spectrogram_section
from audiokit.evaluation.enhancer_card import render_enhancer_markdown
from audiokit.evaluation.paired import EvalRequest, evaluate
from audiokit.evaluation.robustness import robustness_report
from audiokit.evaluation.targets import CardTargets, load_targets, verdicts
from audiokit.evaluation.training_record import training_data, training_record
from audiokit.provenance import finite, run_info
from audiokit.quantize.health import DUPLICATE_COSINE, DUPLICATE_DISTANCE, codebook_health
from audiokit.tools import OPUS_MIN_KBPS


@dataclass(frozen=True, kw_only=True)
class CardRequest(CardOptions):
    """A codec card (:class:`~audiokit.evaluation.card_common.CardOptions`) measured on the references
    ``valid`` matching ``glob`` at ``bitrates`` (kbit/s), with Opus also at ``opus_kbps`` for context."""

    valid: Path
    glob: str = "*"
    bitrates: tuple[float, ...] = (1.5, 3.0, 6.0)
    opus_kbps: tuple[float, ...] = ()

    def data_options(self) -> list[tuple[str, object]]:
        bitrates = tuple(f"{b:g}" for b in self.bitrates)
        opus_kbps = tuple(f"{b:g}" for b in self.opus_kbps) or None
        return [
            ("--valid", self.valid),
            ("--glob", self.glob),
            ("--bitrates", bitrates),
            ("--opus-kbps", opus_kbps),
        ]

    def data_paths(self) -> list[str]:
        return [str(self.valid)]


def _eval_command(valid: str, glob: str, system: list[str], kbps: float, jobs: int) -> str:
    argv = [*system, "--glob", glob, "--bitrate", f"{kbps:g}", "--jobs", str(jobs), "--json"]
    return " ".join(["audiokit", "eval", shown_path(valid), *map(shlex.quote, argv)])


def measure(
    weights: str,
    valid: Path,
    glob: str,
    bitrates: Sequence[float],
    jobs: int,
    quiet: bool = True,
    opus_rates: Sequence[float] = (),
) -> tuple[dict, dict[str, list[dict]]]:
    """Scores of the codec at each bitrate and of Opus at the same bitrates (its minimum below that),
    at its minimum and at ``opus_rates`` (kbit/s).

    Returns the evaluation section of the card (reports by kbps, the command behind each) and the
    per-file rows by system key (``ours@K``, ``opus@K``) for paired comparisons.
    """
    opus_kbps = sorted({max(k, OPUS_MIN_KBPS) for k in bitrates} | {OPUS_MIN_KBPS} | set(opus_rates))
    section: dict = {"valid": str(valid), "glob": glob, "jobs": jobs, "codec": {}, "opus": {}, "commands": {}}
    rows: dict[str, list[dict]] = {}
    for kind, rates in (("codec", bitrates), ("opus", opus_kbps)):
        for kbps in rates:
            system = {"codec": ["--model", weights], "opus": ["--baseline", "opus"]}[kind]
            request = EvalRequest(
                Path(valid),
                codec=weights if kind == "codec" else None,
                baseline=None if kind == "codec" else "opus",
                bitrate_kbps=kbps,
                glob=glob,
                jobs=jobs,
                quiet=quiet,
            )
            key = f"{'ours' if kind == 'codec' else 'opus'}@{kbps:g}"
            rows[key], section[kind][f"{kbps:g}"] = evaluate(request)
            section["commands"][key] = _eval_command(str(valid), glob, system, kbps, jobs)
    for kbps in bitrates:
        if kbps < OPUS_MIN_KBPS:
            section["opus"][f"{kbps:g}"] = None
    first = next(iter(section["codec"].values()))
    section.update(files=first["n"], seconds=first["seconds"])
    return section, rows


def weights_info(weights: str, bitrates: Sequence[float] = ()) -> dict:
    """Path (as the repository names shipped weights), model name, sha256, training step, sample rate
    and bitrates (kbit/s) of ``weights``; a :class:`UsageError` for ``bitrates`` (kbit/s) it lacks."""
    codec, sha256 = load_codec(weights)
    for kbps in bitrates:
        codec_bitrate(codec, kbps, "--bitrates", model=weights)
    return model_weights(weights, codec, sha256) | {"bitrates_kbps": [b / 1000 for b in codec.bitrates]}


def codebook_health_section(weights: str, valid: str | Path, glob: str) -> dict:
    """Per-stage codebook health (:func:`~audiokit.quantize.health.codebook_health`) of ``weights`` on the
    references under ``valid`` matching ``glob`` (at the codec's rate, mono), with the command behind it."""
    codec, _ = load_codec(weights)
    files = io.find_audio(Path(valid), glob)
    clips = (io.load(path, sample_rate=codec.sample_rate, channels=codec.channels)[0] for path in files)
    code = (
        "import json, os; from audiokit.evaluation.model_card import codebook_health_section as h; "
        f"print(json.dumps(h({json.dumps(weights)}, "
        f"os.path.expandvars({json.dumps(shown_path(str(valid), quote=False))}), {json.dumps(glob)}), "
        "indent=2))"
    )
    return {
        "files": len(files),
        "codebook_size": codec.codebook_size,
        "cosine": DUPLICATE_COSINE,
        "distance": DUPLICATE_DISTANCE,
        "stages": codebook_health(codec, clips),
        "command": "python -c " + shlex.quote(code),
    }


def build_card(request: CardRequest) -> dict:
    """Measure and collect everything the card holds (see the module docstring)."""
    targets = load_targets(request.targets) if request.targets is not None else CardTargets()
    weights = weights_info(request.weights, request.bitrates)
    training = training_record(Path(request.run_dir), request.init_card)
    section, rows = measure(
        request.weights,
        request.valid,
        request.glob,
        request.bitrates,
        request.jobs,
        request.quiet,
        sorted(targets.opus_rates() | set(request.opus_kbps)),
    )
    name = request.name or weights["name"]
    figure = spectrogram_section(
        request.weights,
        request.valid,
        request.glob,
        request.bitrates,
        request.out / f"{name}-spectrograms.png",
    )
    codec, _ = load_codec(request.weights)
    edge_cases = [robustness_report(codec, kbps * 1000) for kbps in request.bitrates]
    health = codebook_health_section(request.weights, request.valid, request.glob)
    return {
        "family": "codec",
        "name": name,
        "generated": run_info(),
        "weights": weights,
        "bitrates": list(request.bitrates),
        "evaluation": section,
        "targets_title": targets.title,
        "targets_file": targets.source,
        "targets": verdicts(targets, section, rows, edge_cases),
        "robustness": edge_cases,
        "codebook_health": health,
        "entropy": entropy_section(request.weights, request.valid, request.glob, request.bitrates),
        "spectrograms": figure,
        "training": training,
        "training_data": training_data(training["recipe_yaml"]),
        "caveat": targets.caveat,
        "command": request.command(),
    }


RENDERERS = {"codec": render_markdown, "enhancer": render_enhancer_markdown, "bwe": render_bwe_markdown}
"""The Markdown of a card by its ``family`` (codec cards from before families were recorded have none)."""


def write_card(card: dict, out: Path) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` (rendered for the card's family: codec,
    enhancer or bwe) atomically; returns their paths."""
    card = finite(card)
    json_path, md_path = out / f"{card['name']}.json", out / f"{card['name']}.md"
    text = json.dumps(card, indent=2, allow_nan=False) + "\n"
    markdown = RENDERERS[card.get("family", "codec")](card)
    with io.atomic_path(json_path) as tmp:
        tmp.write_text(text)
    with io.atomic_path(md_path) as tmp:
        tmp.write_text(markdown)
    return md_path, json_path
