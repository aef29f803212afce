"""Model cards: a codec measured side by side with Opus on validation speech, with its training record.

``python -m audiokit.model_card --weights MODEL --run-dir RUN_DIR --valid REF_DIR --glob 'vm-*'
--bitrates 1.5 3 6 --jobs 2 --out docs/models`` runs ``audiokit eval --codec`` at each bitrate and
``audiokit eval --baseline opus`` at the same bitrates (Opus below its 6 kbps minimum is "n/a" and the
codec is compared with Opus 6 kbps instead), reads what the trainer wrote into the run directory
(``run.json``, ``recipe.yaml``, ``metrics.jsonl``, ``eval.jsonl``) and the recipe's training manifests,
and writes ``<out>/<name>.json`` and ``<out>/<name>.md`` atomically. Every number in the card comes with
the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from audiokit import io
from audiokit.baselines import OPUS_MIN_KBPS
from audiokit.data.manifest import package_totals, read_jsonl
from audiokit.data.paths import data_root
from audiokit.data.sources import SOURCES
from audiokit.errors import AudiokitError, ModelError, RecipeError, UsageError
from audiokit.provenance import finite, run_info
from audiokit.robustness import robustness_report

CARD_METRICS = (
    ("pesq", "PESQ-WB"),
    ("stoi", "STOI"),
    ("si_sdr", "SI-SDR (dB)"),
    ("mel_distance", "mel distance"),
)
BANDWIDTH_CAVEAT = (
    "The validation speech is G.722 material (Asterisk prompts decoded from G.722, a 50 Hz - 7 kHz codec): "
    "above about 7 kHz the references hold only weak residue, so these scores say little about the 7-8 kHz "
    "band, and a codec that drops it loses little here. Opus at 6 kbps (libopus 1.3) codes only up to "
    "about 4 kHz."
)


# -- the training record ---------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file the trainer may not have written yet (none then)."""
    return read_jsonl(path) if path.is_file() else []


def _recipe_argument(command: list[str]) -> str | None:
    """The recipe path of a recorded ``audiokit train RECIPE ...`` command line."""
    if "train" in command:
        rest = command[command.index("train") + 1 :]
        return next((a for a in rest if a.endswith((".yaml", ".yml"))), None)
    return None


def _loop_seconds(metrics: list[dict], start_steps: list[int]) -> float:
    """Wall time of the training loops: each logged window's steps over its measured steps/second.

    A window starts at the previous logged step, or at a session's start step where the steps go back
    (a resumed session re-logs from its checkpoint).
    """
    total, previous = 0.0, None
    for row in metrics:
        step, speed = row.get("step"), row.get("speed/steps_per_second")
        if step is None or not speed:
            continue
        if previous is None or step <= previous:
            previous = max((s for s in start_steps if s < step), default=0)
        total += (step - previous) / speed
        previous = step
    return total


def _session_seconds(sessions: list[dict]) -> float | None:
    """Sum of ``ended - started`` over the sessions, or None when any session lacks its end."""
    if not sessions or any(not s.get("ended") for s in sessions):
        return None
    spans = (datetime.fromisoformat(s["ended"]) - datetime.fromisoformat(s["started"]) for s in sessions)
    return sum(span.total_seconds() for span in spans)


def _init_weights(init: str) -> tuple[Path | None, str | None]:
    """The ``--init`` weights file and the sha256 its ``model.json`` records (None where not found)."""
    from audiokit.models.codec import _resolve_weights

    try:
        path = _resolve_weights(init)
    except ModelError:
        return None, None
    meta = path.with_suffix(".json")
    return path, json.loads(meta.read_text()).get("sha256") if meta.is_file() else None


def previous_training(
    sessions: list[dict], own_sha256: str | None = None, init_card: Path | None = None
) -> dict | None:
    """Training record of the weights a run started from (``--init``), from their own ``card.json``.

    Only linked when that card describes exactly those weights (same sha256), so a card rewritten for
    newer weights in the same folder is never taken for the run's origin; nor is a card of the run's
    own weights (``own_sha256``), which a run from before ``init_sha256`` was recorded would otherwise
    take for its origin once they were copied over the ones it started from. ``init_card``: that card
    (``card.json``) when it no longer lies beside the init weights (they were replaced since, e.g. by
    this run's own result; take the old card from git); raises :class:`UsageError` when it describes
    other weights than the run recorded, or the run's own.
    """
    start = next((s for s in sessions if s.get("init")), None)
    if init_card is not None:
        return _named_init_card(start, own_sha256, init_card)
    if start is None:
        return None
    init = start["init"]
    path, recorded = _init_weights(init)
    # what the trainer hashed when it loaded them; runs from before it did: the model.json beside them
    sha256 = start.get("init_sha256") or recorded
    card_path = path.parent / "card.json" if path is not None else None
    if card_path is None or not card_path.is_file() or sha256 is None:
        return None
    card = json.loads(card_path.read_text())
    described = card.get("weights", {}).get("sha256")
    if described != sha256 or described == own_sha256 or "training" not in card:
        return None
    return card["training"] | {"weights": init, "weights_sha256": sha256}


def _named_init_card(start: dict | None, own_sha256: str | None, init_card: Path) -> dict:
    """The training record in ``init_card``, checked against the run's recorded init sha256 (runs from
    before the trainer recorded it are taken at the user's word) and its own weights."""
    if start is None:
        raise UsageError(f"--init-card {init_card}: the run did not start from --init weights")
    if not init_card.is_file():
        raise UsageError(f"--init-card {init_card}: no such file")
    card = json.loads(init_card.read_text())
    described = card.get("weights", {}).get("sha256")
    expected = start.get("init_sha256")
    if "training" not in card or described is None:
        raise UsageError(f"--init-card {init_card}: not a model card (no weights sha256 or training record)")
    if described == own_sha256 or (expected is not None and described != expected):
        started = f"started from {expected[:16]}..." if expected else "wrote these very weights"
        raise UsageError(f"--init-card {init_card}: describes weights {described[:16]}..., the run {started}")
    return card["training"] | {"weights": start["init"], "weights_sha256": described}


def training_record(run_dir: Path, init_card: Path | None = None) -> dict:
    """Recipe, commits, sessions, steps, hardware and wall time of a training run directory.

    ``total_steps`` adds the steps of the runs the weights descend from through ``--init``
    (``previous``, nested when those started from earlier weights too; ``init_card``: see
    :func:`previous_training`).
    """
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise UsageError(f"--run-dir {run_dir}: no run.json (not an `audiokit train` run directory)")
    info = json.loads(info_path.read_text())
    sessions = info.get("sessions", [])
    metrics = _jsonl(run_dir / "metrics.jsonl")
    evaluations = _jsonl(run_dir / "eval.jsonl")
    recipe_text = (run_dir / "recipe.yaml").read_text() if (run_dir / "recipe.yaml").is_file() else None
    # a session stopped between two log lines records its last step only in run.json
    ended = [s["end_step"] for s in sessions if s.get("end_step") is not None]
    steps = max([r["step"] for r in metrics + evaluations if "step" in r] + ended, default=0)
    own = run_dir / "model.json"
    own_sha256 = json.loads(own.read_text()).get("sha256") if own.is_file() else None
    previous = previous_training(sessions, own_sha256, init_card)
    return {
        "run_dir": str(run_dir),
        "recipe_path": next((p for s in sessions if (p := _recipe_argument(s.get("command", [])))), None),
        "recipe_yaml": recipe_text,
        "seed": info.get("seed"),
        "commits": list(dict.fromkeys(s.get("commit") for s in sessions if s.get("commit"))),
        "sessions": [
            {
                key: s.get(key)
                for key in (
                    "started",
                    "start_step",
                    "ended",
                    "end_step",
                    "resumed",
                    "init",
                    "init_grown_to",
                    "device",
                    "hardware",
                    "threads",
                    "world_size",
                    "host",
                )
            }
            | {"command": shlex.join(s.get("command", []))}
            for s in sessions
        ],
        "steps": steps,
        "total_steps": steps + (previous.get("total_steps", previous["steps"]) if previous else 0),
        "previous": previous,
        "loop_wall_seconds": round(_loop_seconds(metrics, [s.get("start_step", 0) for s in sessions]), 1),
        "session_wall_seconds": _session_seconds(sessions),
        "last_eval": evaluations[-1] if evaluations else None,
        "versions": sessions[-1].get("versions") if sessions else None,
    }


def training_data(recipe_yaml: str | None) -> list[dict]:
    """The recipe's training audio (``data.train``, and ``data.noise`` when mixed in) by package.

    Each entry: role, the manifest or directory, and per package clips, hours, the licences the
    manifest records, those of the allowlist (:mod:`audiokit.data.sources`) and whether the package is
    a training package of the allowlist at all.
    """
    from audiokit.train.data import resolve_source
    from audiokit.train.recipe import recipe_from_dict

    if recipe_yaml is None:
        return []
    data = recipe_from_dict(yaml.safe_load(recipe_yaml), "recipe.yaml").data
    wanted = [("train", data.train)] + (
        [("noise", data.noise)] if data.noise and data.noise_probability else []
    )
    entries = []
    for key, spec in wanted:
        entry: dict = {"key": f"data.{key}", "spec": spec}
        try:
            source = resolve_source(spec, f"data.{key}")
        except RecipeError:
            entries.append(entry | {"found": False})
            continue
        entry.update(found=True, source=str(source))
        if source.is_dir():
            entry["files"] = len(
                [p for p in source.rglob(data.glob) if p.suffix.lower() in io.AUDIO_EXTENSIONS]
            )
            entry["packages"] = []
        else:
            entry["packages"] = _packages(_jsonl(source))
        entries.append(entry)
    return entries


def _packages(rows: list[dict]) -> list[dict]:
    packages = []
    for totals in package_totals(rows, unnamed="(no package recorded)"):
        rules = [s for s in SOURCES if s.package == totals["package"] and s.split == "train"]
        packages.append(
            {
                "package": totals["package"],
                "clips": totals["clips"],
                "hours": round(totals["seconds"] / 3600, 3),
                "licences": sorted(totals["licences"]),
                "allowlist_licences": sorted({s.licence for s in rules}),
                "training_package": bool(rules),
            }
        )
    return packages


# -- the measurements ------------------------------------------------------------------------------
def _shown_path(path: str, quote: bool = True) -> str:
    """``path`` for a command line (shell-quoted unless ``quote=False``), under ``$AUDIOKIT_DATA`` when
    it lies in the data cache."""
    try:
        relative = Path(path).resolve().relative_to(data_root().resolve())
    except ValueError:
        return shlex.quote(path) if quote else path
    return f'"$AUDIOKIT_DATA/{relative}"' if quote else f"$AUDIOKIT_DATA/{relative}"


def _weights_step_note(weights: dict, training: dict) -> str:
    step = weights.get("step")
    if step is None or step == training["steps"]:
        return ""
    return f" (**the weights are from step {step}**)"


def _eval_argv(valid: str, glob: str, system: list[str], kbps: float, jobs: int) -> list[str]:
    return ["eval", valid, "--glob", glob, *system, "--bitrate", f"{kbps:g}", "--jobs", str(jobs), "--json"]


def _command(argv: list[str], program: str = "audiokit") -> str:
    return " ".join([program, argv[0], _shown_path(argv[1]), *map(shlex.quote, argv[2:])])


def _run_eval(argv: list[str], quiet: bool) -> tuple[list[dict], dict]:
    from audiokit.cli import build_parser
    from audiokit.cli.eval import evaluate

    return evaluate(build_parser().parse_args(argv + (["--quiet"] if quiet else [])))


def _paired(ours: list[dict], reference: list[dict], metric: str) -> dict:
    """Mean and 95 % CI (Student t) of the per-file difference ``ours - reference`` (NaN pairs left out)."""
    import scipy.stats

    theirs = {r["file"]: r[metric] for r in reference}
    diffs = np.array([r[metric] - theirs[r["file"]] for r in ours], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    half = math.nan
    if diffs.size > 1:
        half = float(scipy.stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size))
    return {"mean": float(diffs.mean()) if diffs.size else math.nan, "ci95": half, "n": int(diffs.size)}


def measure(
    weights: str, valid: str, glob: str, bitrates: list[float], jobs: int, quiet: bool = False
) -> tuple[dict, dict[str, list[dict]]]:
    """Scores of the codec at each bitrate and of Opus at the same bitrates (and at 6 kbps).

    Returns the evaluation section of the card and the per-file rows by system key (``ours@K``,
    ``opus@K``) for paired comparisons.
    """
    opus_rates = sorted({max(k, OPUS_MIN_KBPS) for k in bitrates} | {OPUS_MIN_KBPS})
    section: dict = {"valid": valid, "glob": glob, "jobs": jobs, "codec": {}, "opus": {}, "commands": {}}
    rows: dict[str, list[dict]] = {}
    for kind, rates, system in (
        ("codec", bitrates, ["--codec", weights]),
        ("opus", opus_rates, ["--baseline", "opus"]),
    ):
        for kbps in rates:
            argv = _eval_argv(valid, glob, system, kbps, jobs)
            key = f"{'ours' if kind == 'codec' else 'opus'}@{kbps:g}"
            rows[key], section[kind][f"{kbps:g}"] = _run_eval(argv, quiet)
            section["commands"][key] = _command(argv)
    for kbps in bitrates:
        if kbps < OPUS_MIN_KBPS:
            section["opus"][f"{kbps:g}"] = None
    first = next(iter(section["codec"].values()))
    section.update(files=first["n"], seconds=first["seconds"])
    return section, rows


# -- targets ---------------------------------------------------------------------------------------
def targets(section: dict, rows: dict[str, list[dict]], bitrates: list[float]) -> list[dict]:
    """Issue 5's targets, each met / not met / not evaluated, with the numbers behind the verdict."""
    opus6 = f"opus@{OPUS_MIN_KBPS:g}"
    checks = [
        (6.0, "pesq", "above", "6 kbps: PESQ-WB above Opus 6 kbps"),
        (6.0, "stoi", "above", "6 kbps: STOI above Opus 6 kbps"),
        (3.0, "pesq", "no worse", "3 kbps: PESQ-WB no worse than Opus 6 kbps"),
        (3.0, "stoi", "no worse", "3 kbps: STOI no worse than Opus 6 kbps"),
    ]
    results = []
    for kbps, metric, relation, title in checks:
        key = f"ours@{kbps:g}"
        if kbps not in bitrates:
            results.append(
                {"target": title, "status": "not evaluated", "reason": f"{kbps:g} not in --bitrates"}
            )
            continue
        ours, opus = section["codec"][f"{kbps:g}"][metric], section["opus"][f"{OPUS_MIN_KBPS:g}"][metric]
        diff = _paired(rows[key], rows[opus6], metric)
        met = diff["mean"] > 0 if relation == "above" else diff["mean"] >= 0
        results.append(
            {
                "target": title,
                "status": "met" if met else "not met",
                "ours": ours,
                "opus_6kbps": opus,
                "paired_difference": diff,
                "significant": math.isfinite(diff["ci95"]) and abs(diff["mean"]) > diff["ci95"],
            }
        )
    if 6.0 in bitrates:
        pesq = section["codec"]["6"]["pesq"]
        results.append(
            {
                "target": "aim: PESQ-WB >= 2.5 at 6 kbps",
                "status": "met" if pesq >= 2.5 else "not met",
                "ours": pesq,
            }
        )
    return results


# -- the card --------------------------------------------------------------------------------------
def _number(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted, or ``NaN`` where the card holds None (a NaN or infinite measurement)."""
    return "NaN" if value is None else format(value, spec)


def _value(report: dict | None, metric: str) -> str:
    if report is None or report.get(metric) is None:
        return "n/a"
    half = report["ci95"].get(metric)
    return f"{report[metric]:.3f}" + ("" if half is None else f" ± {half:.3f}")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _lineage(training: dict) -> list[dict]:
    """The training records the weights descend from, earliest first, ending with ``training``."""
    chain = [training]
    while chain[0].get("previous"):
        chain.insert(0, chain[0]["previous"])
    return chain


def _session_table(sessions: list[dict]) -> list[str]:
    """Markdown table of training sessions: times, steps, hardware, host and command."""
    lines = [
        "| session started | ended | steps | hardware (device x processes, threads) | host | command |",
        "|---|---|---|---|---|---|",
    ]
    for s, following in zip(sessions, [*sessions[1:], None], strict=True):
        end = s["end_step"]
        if end is None:  # the process was killed; its weights continue where the next session resumed
            end = "?" if following is None else f"? (next resumed at {following['start_step']})"
        steps = f"{s['start_step']} -> {end}"
        processes = f"{s['device']} x {s['world_size']}, {s['threads'] or '?'} threads"
        hardware = f"{s['hardware'] or s['device']} ({processes})"
        lines.append(
            f"| {s['started']} | {s['ended'] or 'not recorded'} | {steps} | {hardware} | {s['host']} | "
            f"`{s['command']}` |"
        )
    return lines


def render_markdown(card: dict) -> str:
    """The card as Markdown (every number is also in the JSON beside it)."""
    w, t, e = card["weights"], card["training"], card["evaluation"]
    name = w["name"]  # the model's name; card["name"] only names the files
    lines = [f"# {name}", ""]
    status = "a shipped model" if w["shipped"] else "**not a shipped model**: weights loaded from a path"
    lines += [
        f"Weights: `{w['path']}` ({status}); sha256 `{w['sha256']}`, step {w.get('step', 'not recorded')}.",
        f"Card generated {card['generated']['date']} at commit `{card['generated']['commit']}` on "
        f"{card['generated']['machine']['processor']} x {card['generated']['machine']['cpu_count']} "
        f"({card['generated']['machine']['gpu'] or 'no GPU'}).",
        "",
        "## Quality on the validation speech",
        "",
        f"{e['files']} files, {e['seconds'] / 60:.1f} min: `{_shown_path(e['valid'], quote=False)}` "
        f"(`--glob {e['glob']}`), "
        "mean ± 95 % CI over files. Real kbps is the coded files' size (`.akc` with header, CRCs and "
        "index; Ogg Opus with its container) over the audio duration.",
        "",
        "| system | kbps | real kbps | " + " | ".join(title for _, title in CARD_METRICS) + " |",
        "|---" * (3 + len(CARD_METRICS)) + "|",
    ]
    for kbps in card["bitrates"]:
        for label, report in ((name, e["codec"][f"{kbps:g}"]), ("Opus", e["opus"].get(f"{kbps:g}"))):
            real = "n/a" if report is None else f"{report['actual_bitrate_kbps']:.2f}"
            values = " | ".join(_value(report, metric) for metric, _ in CARD_METRICS)
            lines.append(f"| {label} | {kbps:g} | {real} | {values} |")
    if OPUS_MIN_KBPS not in card["bitrates"]:
        report = e["opus"][f"{OPUS_MIN_KBPS:g}"]
        values = " | ".join(_value(report, metric) for metric, _ in CARD_METRICS)
        lines.append(f"| Opus | {OPUS_MIN_KBPS:g} | {report['actual_bitrate_kbps']:.2f} | {values} |")
    lines += [
        "",
        f"Opus below {OPUS_MIN_KBPS:g} kbps (its minimum) is n/a; lower bitrates of ours are compared with "
        f"Opus {OPUS_MIN_KBPS:g} kbps.",
        "",
        f"**Bandwidth caveat.** {BANDWIDTH_CAVEAT}",
        "",
        "## Targets (issue 5)",
        "",
    ]
    for target in card["targets"]:
        line = f"- {target['target']}: **{target['status']}**"
        if "paired_difference" in target:
            d = target["paired_difference"]
            half = "n/a" if d["ci95"] is None or not math.isfinite(d["ci95"]) else f"{d['ci95']:.3f}"
            line += (
                f" (ours {_number(target['ours'])} vs Opus 6 kbps {_number(target['opus_6kbps'])}; "
                f"paired difference {_number(d['mean'], '+.3f')} ± {half} over {d['n']} files, "
                f"{'beyond' if target['significant'] else 'not beyond'} its 95 % CI)"
            )
        elif "ours" in target:
            line += f" (ours {_number(target['ours'])})"
        elif "reason" in target:
            line += f" ({target['reason']})"
        lines.append(line)
    lines += [
        "",
        "## Edge cases",
        "",
        "`audiokit.robustness.robustness_report` on 5 s of digital silence, a full-scale square wave, "
        "noise clipped at full scale and inputs of 1 to 4799 samples:",
        "",
        "| bitrate | " + " | ".join(ROBUSTNESS_TITLES.values()) + " |",
        "|---|" + "---|" * len(ROBUSTNESS_TITLES),
    ]
    for report in card["robustness"]:
        cells = []
        for key in ROBUSTNESS_TITLES:
            entry = report[key]
            value = entry["value"] if isinstance(entry["value"], bool) else _number(entry["value"], ".4g")
            cells.append(f"{value} ({'ok' if entry['ok'] else '**fails**'}, limit {entry['limit']})")
        lines.append(f"| {report['bitrate'] / 1000:g} kbps | " + " | ".join(cells) + " |")
    lines += ["", "## Training", ""]
    lines += [
        f"Run directory `{t['run_dir']}`: {t['steps']} steps{_weights_step_note(w, t)}"
        + (
            f" after {t['total_steps'] - t['steps']} earlier ones ({t['total_steps']} in all)"
            if t.get("previous")
            else ""
        )
        + f", seed {t['seed']}, "
        "training-loop wall time "
        f"{_hours(t['loop_wall_seconds'])} (sum over `metrics.jsonl` windows of steps / measured steps per "
        f"second; evaluation and checkpoint time included, start-up not)"
        + (
            f"; sessions' start to end: {_hours(t['session_wall_seconds'])}."
            if t["session_wall_seconds"] is not None
            else "; some sessions ran before the trainer recorded end times."
        ),
        f"Commit(s): {', '.join(f'`{c}`' for c in t['commits']) or 'not recorded'}.",
        f"Recipe: `{t['recipe_path'] or 'not recorded'}` (the run's resolved `recipe.yaml` is below).",
        "",
        *_session_table(t["sessions"]),
    ]
    for earlier in _lineage(t)[:-1][::-1]:
        lines += [
            "",
            f"It started (`--init`) from `{earlier['weights']}` (sha256 `{earlier['weights_sha256'][:16]}`), "
            f"trained for {earlier['steps']} steps in `{earlier['run_dir']}` "
            f"(commits {', '.join(f'`{c}`' for c in earlier['commits']) or 'not recorded'}):",
            "",
            *_session_table(earlier["sessions"]),
        ]
    if t["last_eval"]:
        lines += ["", f"Trainer's last evaluation (step {t['last_eval']['step']}, its own subset of clips): "]
        for bitrate, scores in t["last_eval"].get("bitrates", {}).items():
            shown = ", ".join(f"{k} {_number(v)}" for k, v in scores.items())
            lines.append(f"- {float(bitrate) / 1000:g} kbps: {shown}")
    lines += ["", "### Training data", ""]
    for entry in card["training_data"]:
        if not entry.get("found"):
            lines.append(
                f"- `{entry['key']}` = `{entry['spec']}`: not found on the machine that wrote this card."
            )
            continue
        if not entry["packages"]:
            source = _shown_path(entry["source"], quote=False)
            lines.append(f"- `{entry['key']}` = `{source}`: {entry['files']} files, no package record.")
            continue
        lines += [
            f"`{entry['key']}` = `{entry['spec']}` (`{_shown_path(entry['source'], quote=False)}`):",
            "",
            "| package | clips | hours | licence (manifest) | licence (allowlist) |",
            "|---|---|---|---|---|",
        ]
        for p in entry["packages"]:
            allowlist = ", ".join(p["allowlist_licences"]) or "**not a training package of the allowlist**"
            lines.append(
                f"| {p['package']} | {p['clips']} | {p['hours']:.2f} | {', '.join(p['licences']) or '?'} | "
                f"{allowlist} |"
            )
        lines.append("")
    lines += ["", "## Reproduce", "", "```sh"]
    lines += [
        "# training, session by session as recorded in run.json (the data: audiokit data prepare)",
        *(s["command"] for record in _lineage(t) for s in record["sessions"]),
        "# the validation speech, and every number of the table and the targets",
        "audiokit data prepare --roles speech --split valid",
        *card["evaluation"]["commands"].values(),
        "# this card",
        card["command"],
        "```",
    ]
    if t["recipe_yaml"]:
        lines += ["", "### Resolved recipe", "", "```yaml", t["recipe_yaml"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


ROBUSTNESS_TITLES = {
    "silence_rms_dbfs": "silence out, RMS dBFS",
    "silence_peak_dbfs": "silence out, peak dBFS",
    "silence_dc": "silence out, DC",
    "full_scale_peak": "full-scale in, peak out",
    "finite": "finite",
    "exact_lengths": "exact lengths",
}


def robustness(weights: str, bitrates: list[float]) -> list[dict]:
    """:func:`audiokit.robustness.robustness_report` at each bitrate (kbit/s)."""
    from audiokit.cli.coding import load_codec

    codec, _ = load_codec(weights)
    return [robustness_report(codec, kbps * 1000) for kbps in bitrates]


def robustness_target(reports: list[dict]) -> dict:
    """Issue 5's edge-case target from :func:`robustness` reports."""
    failing = [
        f"{ROBUSTNESS_TITLES[key]} at {report['bitrate'] / 1000:g} kbps"
        for report in reports
        for key in ROBUSTNESS_TITLES
        if not report[key]["ok"]
    ]
    return {
        "target": "no NaN, click or DC drift on silence, clipping or 1-sample input; exact decoded lengths",
        "status": "not met" if failing else "met",
        "reason": "fails: " + ", ".join(failing) if failing else "every check passes (see Edge cases)",
    }


def _weights_info(weights: str) -> dict:
    from audiokit.cli.coding import load_codec
    from audiokit.models.codec import _resolve_weights, is_shipped

    codec, sha256 = load_codec(weights)
    path = _resolve_weights(weights)
    meta = json.loads(path.with_suffix(".json").read_text())
    shipped = is_shipped(weights)
    if shipped:  # as the repository names it, not where this checkout happens to be
        path = Path("audiokit") / "weights" / path.name
    info = {"path": str(path), "name": codec.name, "sha256": sha256, "shipped": shipped}
    if "step" in meta:
        info["step"] = meta["step"]
    info["sample_rate"] = codec.sample_rate
    info["bitrates_kbps"] = [b / 1000 for b in codec.bitrates]
    return info


def build_card(args: argparse.Namespace) -> dict:
    """Measure and collect everything the card holds (see the module docstring)."""
    weights = _weights_info(args.weights)
    init_card = Path(args.init_card) if args.init_card else None
    training = training_record(Path(args.run_dir), init_card)
    section, rows = measure(args.weights, args.valid, args.glob, args.bitrates, args.jobs, args.quiet)
    edge_cases = robustness(args.weights, args.bitrates)
    argv = ["--weights", args.weights, "--run-dir", args.run_dir, "--valid", args.valid, "--glob", args.glob]
    argv += ["--bitrates", *(f"{b:g}" for b in args.bitrates), "--jobs", str(args.jobs), "--out", args.out]
    if args.name:
        argv += ["--name", args.name]
    if args.init_card:
        argv += ["--init-card", args.init_card]
    shown = " ".join(_shown_path(a) if a == args.valid else shlex.quote(a) for a in argv)
    return {
        "name": args.name or weights["name"],
        "generated": run_info(),
        "weights": weights,
        "bitrates": args.bitrates,
        "evaluation": section,
        "targets": [*targets(section, rows, args.bitrates), robustness_target(edge_cases)],
        "robustness": edge_cases,
        "training": training,
        "training_data": training_data(training["recipe_yaml"]),
        "bandwidth_caveat": BANDWIDTH_CAVEAT,
        "command": f"python -m audiokit.model_card {shown}",
    }


def write_card(card: dict, out: Path) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` atomically; returns their paths."""
    card = finite(card)
    json_path, md_path = out / f"{card['name']}.json", out / f"{card['name']}.md"
    text = json.dumps(card, indent=2, allow_nan=False) + "\n"
    markdown = render_markdown(card)
    with io.atomic_path(json_path) as tmp:
        tmp.write_text(text)
    with io.atomic_path(md_path) as tmp:
        tmp.write_text(markdown)
    return md_path, json_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m audiokit.model_card", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--weights", required=True, help="shipped name, model directory or .safetensors")
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
    parser.add_argument("--out", default="docs/models", help="directory of the card (default docs/models)")
    parser.add_argument("--name", help="file name of the card (default: the model's name)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build and write a model card; user errors end as one line on stderr and exit code 1."""
    args = parse_args(argv)
    try:
        card = build_card(args)
        md_path, json_path = write_card(card, Path(args.out))
    except AudiokitError as exc:
        print(f"model_card: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {md_path} and {json_path}")
        for target in card["targets"]:
            print(f"  {target['target']}: {target['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
