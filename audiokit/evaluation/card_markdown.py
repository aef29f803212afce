"""A model card as Markdown: quality next to Opus, targets, edge cases, training record and data, and the
commands that reproduce every number (everything is also in the card's JSON)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from pathlib import Path

from audiokit.data.paths import data_root
from audiokit.errors import ModelError
from audiokit.evaluation.robustness import ROBUSTNESS_TITLES
from audiokit.evaluation.training_record import lineage
from audiokit.models.archive import model_version
from audiokit.models.base import with_article
from audiokit.tools import OPUS_MIN_KBPS

CARD_METRICS = (
    ("pesq", "PESQ-WB"),
    ("stoi", "STOI"),
    ("si_sdr", "SI-SDR (dB)"),
    ("mel_distance", "mel distance"),
)


def shown_path(path: str, quote: bool = True) -> str:
    """``path`` for a command line (shell-quoted unless ``quote=False``), under ``$AUDIOKIT_DATA`` when
    it lies in the data cache."""
    try:
        relative = Path(path).resolve().relative_to(data_root().resolve())
    except ValueError:
        return shlex.quote(path) if quote else path
    return f'"$AUDIOKIT_DATA/{relative}"' if quote else f"$AUDIOKIT_DATA/{relative}"


def _weights_origin(weights: dict) -> str:
    """``step N``, or what an average of weights (``audiokit checkpoint average``) was made of, and which
    tensors are stored as float16."""
    stored = weights.get("float16_tensors") or []
    half = (
        f"; {_prefixes(stored)} stored as float16 (their values float16's, so the file's own sha256 is "
        "not the weights')"
        if stored
        else ""
    )
    ingredients = weights.get("averaged_from")
    if not ingredients:
        return f"step {weights.get('step', 'not recorded')}{half}"
    steps = " and ".join(
        f"step {i.get('step', 'not recorded')} (`{str(i['sha256'])[:12]}`)" for i in ingredients
    )
    tensors = weights.get("averaged_tensors") or []
    if not tensors:
        return f"the mean of the weights of {steps}{half}"
    return f"the mean of the weights of {steps} in {_prefixes(tensors)}, the rest the first's{half}"


def _prefixes(prefixes: list[str]) -> str:
    return ", ".join(f"`{prefix}*`" for prefix in prefixes)


def _weights_step_note(weights: dict, training: dict) -> str:
    if weights.get("averaged_from"):
        return " (**the weights average several of them**: see above)"
    step = weights.get("step")
    if step is None or step == training["steps"]:
        return ""
    return f" (**the weights are from step {step}**)"


def _own_step(weights: dict, training: dict) -> int:
    """The run's step at the card's weights: their ``step``, else the run's last (averaged weights)."""
    step = weights.get("step")
    return step if isinstance(step, int) else training["steps"]


def _number(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted, or ``NaN`` where the card holds None (a NaN or infinite measurement)."""
    return "NaN" if value is None else format(value, spec)


def value_cell(report: dict | None, metric: str) -> str:
    """``mean ± half-width`` of ``metric`` in an evaluation report, ``n/a`` where not measured, and
    ``(k of n files)`` when the mean leaves files out (STOI on clips too short for it), as ``audiokit
    eval`` prints it: the card's text says "over N files"."""
    if report is None or report.get(metric) is None:
        return "n/a"
    half = report["ci95"].get(metric)
    cell = f"{report[metric]:.3f}" + ("" if half is None else f" ± {half:.3f}")
    scored, files = report.get("count", {}).get(metric), report.get("n")
    if scored is not None and files is not None and scored < files:
        cell += f" ({scored} of {files} files)"
    return cell


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def session_table(sessions: list[dict]) -> list[str]:
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


def codebook_lines(health: dict) -> list[str]:
    """The card's "Codebook health" section: per-stage usage on the validation clips, near-duplicate
    codeword pairs and, where measured, the code space's geometry (offset, effective dimensions)."""
    geometry = "effective_dims" in health["stages"][0]
    size = health.get("codebook_size", 1024)  # cards written before it was recorded: speech-16k's
    lines = [
        "## Codebook health",
        "",
        f"Per stage, on the {health['files']} validation files coded with every codebook "
        f"({health['stages'][0]['frames']} frames): perplexity (exp of the entropy of code use; "
        f"{size} is uniform use of {size:,} codewords), codewords used and never used (dead), and pairs "
        f"of near-duplicate codewords: cosine similarity > {health['cosine']} and Euclidean distance < "
        f"{health['distance']:g} x the codebook's spread (RMS distance of its codewords from their "
        "mean); the closest pair's distance in units of the spread."
        + (
            " Geometry: the codewords' mean's distance from the origin (offset, in spreads), the cosine "
            "pairs counted about that mean instead of the origin, and how many of the code space's "
            "directions the codewords spread over (participation ratio of their covariance's "
            "eigenvalues). The code space's origin is arbitrary (the stage's in-projection has a "
            "bias) and the lookup is Euclidean: with a large offset every pair of codewords points "
            "nearly the same way without being close, so the distance test is the one that finds "
            "duplicates."
            if geometry
            else ""
        ),
        "",
    ]
    header = (
        f"| stage | perplexity | used | dead | pairs cos > {health['cosine']} | pairs dist < "
        f"{health['distance']:g} spread | closest pair / spread |"
    )
    if geometry:
        lines += [
            f"{header} offset / spread | pairs cos > {health['cosine']} about the mean | effective dims |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [header, "|---|---|---|---|---|---|---|"]
    for s in health["stages"]:
        row = (
            f"| {s['stage']} | {s['perplexity']:.1f} | {s['used']} | {s['dead']} | "
            f"{s['duplicates_cosine']} | {s['duplicates_euclidean']} | {s['min_distance']:.4f} |"
        )
        if geometry:
            row += f" {s['offset']:.1f} | {s['duplicates_cosine_centred']} | {s['effective_dims']:.2f} |"
        lines.append(row)
    lines += ["", f"Reproduce: `{health['command']}`"]
    return lines


def target_lines(card: dict) -> list[str]:
    """The caveat of the targets file, then the targets section: each verdict with the numbers behind it
    (none without targets)."""
    lines = [f"**Caveat.** {card['caveat']}", ""] if card.get("caveat") else []
    if card["targets"]:
        lines += [f"## {card['targets_title']}", ""]
    for target in card["targets"]:
        line = f"- {target['target']}: **{target['status']}**"
        if "paired_difference" in target:
            d = target["paired_difference"]
            half = "n/a" if d["ci95"] is None or not math.isfinite(d["ci95"]) else f"{d['ci95']:.3f}"
            if "opus_kbps" in target:
                other = f"Opus {target['opus_kbps']:g} kbps {_number(target['opus'])}"
            else:
                other = f"{target['other']} {_number(target['other_value'])}"
            line += (
                f" (ours {_number(target['ours'])} vs {other}; "
                f"paired difference {_number(d['mean'], '+.3f')} ± {half} over {d['n']} files, "
                f"{'beyond' if target['significant'] else 'not beyond'} its 95 % CI)"
            )
        elif "ratio" in target:
            line += (
                f" (ours {_number(target['ours'])} = {_number(target['ratio'])} x {target['other']}'s "
                f"{_number(target['other_value'])})"
            )
        elif "ours" in target:
            line += f" (ours {_number(target['ours'])})"
        elif "reason" in target:
            line += f" ({target['reason']})"
        lines.append(line)
    return lines


def header_lines(card: dict) -> list[str]:
    """The card's title, weights and where it was generated, then a blank line."""
    w, generated = card["weights"], card["generated"]
    status = "a shipped model" if w["shipped"] else "**not a shipped model**: weights loaded from a path"
    # other weights are named as their card is (the run's), not by the config they share with a shipped model
    title = w["name"]
    if not w["shipped"]:
        title = f"{card.get('name', w['name'])} ({with_article(w['name'])} model, not shipped)"
    named = " (what `.akc` headers name)" if card.get("family", "codec") == "codec" else ""
    return [
        f"# {title}",
        "",
        f"Weights: `{w['path']}` ({status}); weights sha256 `{w['sha256']}`{named}, {_weights_origin(w)}.",
        f"Card generated {generated['date']} at commit `{generated['commit']}` on "
        f"{generated['machine']['processor']} x {generated['machine']['cpu_count']} "
        f"({generated['machine']['gpu'] or 'no GPU'}).",
        "",
    ]


def render_markdown(card: dict) -> str:
    """The card as Markdown (every number is also in the JSON beside it)."""
    w, e = card["weights"], card["evaluation"]
    name = w["name"]  # the model's name; card["name"] only names the files
    lines = [
        *header_lines(card),
        "## Quality on the validation speech",
        "",
        f"{e['files']} files, {e['seconds'] / 60:.1f} min: `{shown_path(e['valid'], quote=False)}` "
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
            values = " | ".join(value_cell(report, metric) for metric, _ in CARD_METRICS)
            lines.append(f"| {label} | {kbps:g} | {real} | {values} |")
    shown = {f"{kbps:g}" for kbps in card["bitrates"]}
    for key in sorted(set(e["opus"]) - shown, key=float):  # Opus at its minimum and for context
        report = e["opus"][key]
        values = " | ".join(value_cell(report, metric) for metric, _ in CARD_METRICS)
        lines.append(f"| Opus | {key} | {report['actual_bitrate_kbps']:.2f} | {values} |")
    lines += [
        "",
        f"Opus below {OPUS_MIN_KBPS:g} kbps (its minimum) is n/a; lower bitrates of ours are compared with "
        f"Opus {OPUS_MIN_KBPS:g} kbps.",
        "",
    ]
    if card.get("entropy"):
        lines += [*entropy_lines(card["entropy"], name), ""]
    if card.get("spectrograms"):
        lines += [*spectrogram_lines(card["spectrograms"]), ""]
    lines += target_lines(card)
    lines += [
        "",
        "## Edge cases",
        "",
        "`audiokit.evaluation.robustness.robustness_report` on 5 s of digital silence, a full-scale "
        "square wave, noise clipped at full scale and inputs of 1 to 4799 samples:",
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
    if card.get("codebook_health"):
        lines += ["", *codebook_lines(card["codebook_health"])]
    lines += training_lines(card)
    lines += reproduce_lines(
        card, "audiokit data prepare --roles speech --split valid", card["evaluation"]["commands"].values()
    )
    return "\n".join(lines) + "\n"


def entropy_lines(section: dict, name: str) -> list[str]:
    """The codec card's "Entropy coding" table: real kbps with fixed-width and entropy-coded codes."""
    lines = [
        "### Entropy coding",
        "",
        f"The same {section['files']} files coded as `.akc` with fixed-width codes (`audiokit encode`) and "
        f"entropy-coded (`audiokit encode --entropy`, `{section['model']}`): the same codes, so the same "
        "decoded audio; real kbps as above.",
        "",
        "| kbps | real kbps, fixed width | real kbps, entropy-coded | bytes saved |",
        "|---|---|---|---|",
    ]
    for row in section["rows"]:
        lines.append(
            f"| {row['kbps']:g} | {row['fixed_kbps']:.2f} | {row['entropy_kbps']:.2f} | "
            f"{100 * row['saving']:.1f} % |"
        )
    return [*lines, "", f"Reproduce ({name}): `{section['command']}`"]


def spectrogram_lines(figure: dict) -> list[str]:
    """The codec card's spectrogram figure, with what it shows."""
    return [
        "### Spectrograms",
        "",
        f"`{figure['source']}`: " + ", ".join(figure["titles"]) + " (dB, 80 dB range).",
        "",
        f"![spectrograms]({figure['png']})",
    ]


def training_lines(card: dict) -> list[str]:
    """The card's "Training" section: run, sessions, the runs it descends from, the trainer's last
    evaluation and the training data with its licences."""
    w, t = card["weights"], card["training"]
    lines = ["", "## Training", ""]
    lines += [
        f"Run directory `{t['run_dir']}`: {t['steps']} steps{_weights_step_note(w, t)}"
        + (
            f" after {t['total_steps'] - t['steps']} earlier ones "
            f"({t['total_steps'] - t['steps'] + _own_step(w, t)} in all)"
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
        *session_table(t["sessions"]),
    ]
    for earlier in lineage(t)[:-1][::-1]:
        lines += [
            "",
            f"It started (`--init`) from `{earlier['weights']}` (sha256 `{earlier['weights_sha256'][:16]}`), "
            + (
                f"trained for {earlier['weights_step']} steps in `{earlier['run_dir']}` (which went on to "
                f"{earlier['steps']}) "
                if earlier.get("weights_step") not in (None, earlier["steps"])
                else f"trained for {earlier['steps']} steps in `{earlier['run_dir']}` "
            )
            + (
                f"(training-loop wall time {_hours(earlier['loop_wall_seconds'])}; "
                if earlier.get("loop_wall_seconds") is not None
                else "("
            )
            + f"commits {', '.join(f'`{c}`' for c in earlier['commits']) or 'not recorded'}):",
            "",
            *session_table(earlier["sessions"]),
        ]
    if t["last_eval"]:
        lines += ["", f"Trainer's last evaluation (step {t['last_eval']['step']}, its own subset of clips): "]
        for bitrate, scores in t["last_eval"].get("bitrates", {}).items():
            shown = ", ".join(f"{k} {_number(v)}" for k, v in scores.items())
            lines.append(f"- {float(bitrate) / 1000:g} kbps: {shown}")
        for key, scores in t["last_eval"].items():  # other families: scores by what was scored
            if key != "bitrates" and isinstance(scores, dict):
                lines.append(f"- {key}: " + ", ".join(f"{k} {_number(v)}" for k, v in scores.items()))
    lines += ["", "### Training data", ""]
    for entry in card["training_data"]:
        if not entry.get("found"):
            lines.append(
                f"- `{entry['key']}` = `{entry['spec']}`: not found on the machine that wrote this card."
            )
            continue
        if not entry["packages"]:
            source = shown_path(entry["source"], quote=False)
            lines.append(f"- `{entry['key']}` = `{source}`: {entry['files']} files, no package record.")
            continue
        lines += [
            f"`{entry['key']}` = `{entry['spec']}` (`{shown_path(entry['source'], quote=False)}`):",
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
    return lines


def portable_command(command: str) -> str:
    """A recorded shell ``command`` as a reader of a clone can run it: the program as ``audiokit`` (not
    ``.venv/bin/audiokit``), a recipe given by the absolute path of some checkout (``/x/y/recipes/a.yaml``)
    as ``recipes/a.yaml``, one in the run directory itself (its resolved ``recipe.yaml``) inside
    ``runs/<its name>``, and an absolute ``--run-dir`` or ``--init`` (a run directory) as
    ``runs/<its name>``."""
    words = shlex.split(command)
    if words and words[0].endswith("/audiokit"):
        words[0] = "audiokit"
    run_dir = _option(words, "--run-dir")
    for i, word in enumerate(words):
        path = Path(word)
        if path.is_absolute() and path.suffix in (".yaml", ".yml") and path.parent.name == "recipes":
            words[i] = f"recipes/{path.name}"
        elif path.is_absolute() and path.suffix in (".yaml", ".yml") and str(path.parent) == run_dir:
            words[i] = f"runs/{path.parent.name}/{path.name}"
        elif i and words[i - 1] in ("--run-dir", "--init") and path.is_absolute():
            words[i] = f"runs/{path.name}"
    return shlex.join(words)


def _option(words: list[str], name: str) -> str | None:
    """The value after ``name`` in ``words`` (None when absent)."""
    return words[words.index(name) + 1] if name in words[:-1] else None


def _archived_init(words: list[str], init_sha256: str | None) -> list[str]:
    """``words`` with ``--init NAME`` (a shipped model's name) as ``NAME@VERSION`` where the weights it
    loaded (``init_sha256``) are an archived version: the bare name loads today's weights."""
    name = _option(words, "--init")
    if name is None or init_sha256 is None or "/" in name or "@" in name or name.endswith(".safetensors"):
        return words
    try:
        version = model_version(name, init_sha256)
    except ModelError:
        return words
    if version is None:
        return words
    i = words.index("--init") + 1
    return [*words[:i], version, *words[i + 1 :]]


def _init_from_run(words: list[str], earlier: dict, earlier_dir: str | None) -> list[str]:
    """``words`` with an ``--init`` path (a run directory or weights file of the machine that trained) as
    ``earlier_dir``, the run directory the commands before it made, when the weights it loaded are that
    run's last (``earlier``: its training record); a shipped name is left to :func:`_archived_init`."""
    init = _option(words, "--init")
    if init is None or earlier_dir is None or "/" not in init:
        return words
    if earlier.get("weights_step") not in (None, earlier.get("steps")):
        return words
    i = words.index("--init") + 1
    return [*words[:i], earlier_dir, *words[i + 1 :]]


def training_commands(training: dict) -> list[str]:
    """The ``audiokit train`` commands of every session the weights descend from (:func:`lineage`),
    runnable in order in a clone: each made :func:`portable_command`, an ``--init`` of a shipped name
    pinned to the archived version it loaded, an ``--init`` path that loaded the previous run's last
    weights as that run's directory, and a ``cp -r`` before a session that resumed a copy of the
    previous session's run directory (a fork: run.json records only the resume); a run whose record
    starts with a resume says which steps it lacks."""
    lines: list[str] = []
    made: set[str] = set()
    previous_dir: str | None = None
    chain = lineage(training)
    for index, record in enumerate(chain):
        init_sha256 = chain[index - 1].get("weights_sha256") if index else None
        for number, session in enumerate(record["sessions"]):
            words = _archived_init(shlex.split(portable_command(session["command"])), init_sha256)
            if index and not number:
                words = _init_from_run(words, chain[index - 1], previous_dir)
            run_dir = _option(words, "--run-dir")
            start = session.get("start_step")
            if "--resume" in words and run_dir is not None and run_dir != previous_dir:
                if previous_dir is None:
                    lines.append(
                        f"# {run_dir}'s steps before {start} (where its record starts, with a --resume) "
                        "are not in its run.json"
                    )
                else:
                    copy = f"cp -r {shlex.quote(previous_dir)} {shlex.quote(run_dir)}"
                    if run_dir in made:
                        copy = f"rm -r {shlex.quote(run_dir)} && {copy}"
                    lines.append(f"{copy}   # the run went on in a copy, resumed there at step {start}")
            lines.append(shlex.join(words))
            if run_dir is not None:
                made.add(run_dir)
                previous_dir = run_dir
    return lines


DATA_FOLDER_LINES = (
    "# the data folder the paths below are under (audiokit data prepare's default unless set)",
    'export AUDIOKIT_DATA="${AUDIOKIT_DATA:-$HOME/.cache/audiokit/data}"',
)


def card_run_lines(card: dict) -> list[str]:
    """The card's own command with an absolute ``--run-dir`` as ``runs/<its name>`` (and ``-m`` weights
    in it as in that folder), after a ``cp -r`` of the last training session's run directory where the
    card read another (a copy of it: the training lines never make that one)."""
    command = card["command"]
    words = shlex.split(command)
    run_dir = _option(words, "--run-dir")
    if run_dir is None:
        return [command]
    shown = f"runs/{Path(run_dir).name}" if Path(run_dir).is_absolute() else run_dir
    command = command.replace(f"--run-dir {shlex.quote(run_dir)}", f"--run-dir {shlex.quote(shown)}", 1)
    weights = _option(words, "-m")
    if weights is not None and Path(weights).is_relative_to(run_dir):
        inside = (Path(shown) / Path(weights).relative_to(run_dir)).as_posix()
        command = command.replace(f"-m {shlex.quote(weights)}", f"-m {shlex.quote(inside)}", 1)
    made = [
        _option(shlex.split(portable_command(session["command"])), "--run-dir")
        for record in lineage(card["training"])
        for session in record["sessions"]
    ]
    last = made[-1] if made else None
    if last is None or last == shown:
        return [command]
    note = "# the run directory the card read: a copy of the last session's"
    copy = f"cp -r {shlex.quote(last)} {shlex.quote(shown)}"
    if shown in made:  # an earlier session's folder of that name: cp -r would copy into it
        copy = f"rm -r {shlex.quote(shown)} && {copy}"
    return [f"{copy}   {note}", command]


def reproduce_lines(card: dict, prepare: str, commands: Iterable[str]) -> list[str]:
    """The card's "Reproduce" section: training sessions (:func:`portable_command`), ``prepare`` (the
    data command), the evaluation ``commands`` and the card's own command; then the run's resolved
    recipe."""
    t = card["training"]
    lines = ["", "## Reproduce", "", "```sh"]
    subset = " --max-files " in card["command"]
    lines += [
        *DATA_FOLDER_LINES,
        "# training, session by session as recorded in run.json, paths made relative to a clone (the data:",
        "# audiokit data prepare)",
        *training_commands(t),
        "# the evaluation data, and every number of the tables and the targets"
        + (
            " (these eval lines score every file; the tables, the --max-files subset the card command picks)"
            if subset
            else ""
        ),
        prepare,
        *commands,
        "# this card",
        *card_run_lines(card),
        "```",
    ]
    if t["recipe_yaml"]:
        lines += ["", "### Resolved recipe", "", "```yaml", t["recipe_yaml"].rstrip(), "```"]
    return lines
