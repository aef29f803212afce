"""A model card's targets, read from a YAML (or JSON) file, and their verdicts on the card's measurements.

The file (e.g. ``docs/models/speech-16k-targets.yaml``)::

    title: Targets (issue 5)          # the card's section heading
    caveat: The validation speech ... # optional: a paragraph on what the numbers do not say
    targets:
      - {title: "6 kbps: PESQ-WB above Opus 6 kbps", kbps: 6, metric: pesq, above_opus: 6}
      - {title: "3 kbps: STOI no worse than Opus 6 kbps", kbps: 3, metric: stoi, no_worse_than_opus: 6}
      - {title: "aim: PESQ-WB >= 2.5 at 6 kbps", kbps: 6, metric: pesq, at_least: 2.5}
      - {title: "no NaN ... exact decoded lengths", edge_cases: true}

``above_opus: K`` / ``no_worse_than_opus: K``: the mean per-file difference ours - Opus at K kbps is
> 0 / >= 0 (paired over the same files); ``at_least: V``: our mean is >= V; ``edge_cases``: every
check of :func:`audiokit.evaluation.robustness.robustness_report` passes at every bitrate.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from audiokit.errors import UsageError
from audiokit.evaluation.metrics import METRICS
from audiokit.evaluation.robustness import ROBUSTNESS_TITLES
from audiokit.evaluation.stats import paired_difference

KINDS = ("above_opus", "no_worse_than_opus", "at_least", "edge_cases")


@dataclass(frozen=True)
class Target:
    """One target: ``kind`` (one of :data:`KINDS`) with its ``value`` (Opus kbps, or the threshold), on
    ``metric`` of ours at ``kbps`` (not used by ``edge_cases``)."""

    title: str
    kind: str
    value: float | None = None
    kbps: float | None = None
    metric: str | None = None


@dataclass(frozen=True)
class CardTargets:
    """What a card is measured against: its section ``title``, the targets and an optional ``caveat``."""

    title: str = "Targets"
    targets: tuple[Target, ...] = ()
    caveat: str | None = None
    source: str | None = field(default=None, compare=False)

    def opus_rates(self) -> set[float]:
        """The Opus bitrates (kbit/s) the targets compare with."""
        return {t.value for t in self.targets if t.kind in ("above_opus", "no_worse_than_opus")}


def _unknown(where: str, key: str, valid: list[str]) -> UsageError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid)})"
    return UsageError(f"{where}: unknown key {key!r}{hint}")


def _target(entry: object, where: str) -> Target:
    if not isinstance(entry, dict):
        raise UsageError(
            f"{where}: expected a mapping with title, kbps, metric and one of {', '.join(KINDS)}"
        )
    valid = ["title", "kbps", "metric", *KINDS]
    for key in entry:
        if key not in valid:
            raise _unknown(where, key, valid)
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1 or "title" not in entry:
        raise UsageError(f"{where}: needs a title and exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    if kind == "edge_cases":
        return Target(str(entry["title"]), kind)
    if entry.get("metric") not in METRICS or not isinstance(entry.get("kbps"), int | float):
        raise UsageError(f"{where}: {kind} needs kbps (a number) and metric (one of {', '.join(METRICS)})")
    if not isinstance(entry[kind], int | float) or isinstance(entry[kind], bool):
        raise UsageError(f"{where}: {kind} must be a number, got {entry[kind]!r}")
    return Target(str(entry["title"]), kind, float(entry[kind]), float(entry["kbps"]), entry["metric"])


def load_targets(path: str | Path) -> CardTargets:
    """Read a targets file (module docstring); UsageError naming the file and the entry at fault."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--targets {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not YAML or JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with title, targets and caveat")
    valid = [f.name for f in fields(CardTargets) if f.name != "source"]
    for key in data:
        if key not in valid:
            raise _unknown(str(path), key, valid)
    entries = data.get("targets") or []
    if not isinstance(entries, list):
        raise UsageError(f"{path}: targets must be a list")
    targets = tuple(_target(entry, f"{path}: targets[{i}]") for i, entry in enumerate(entries))
    caveat = data.get("caveat")
    return CardTargets(str(data.get("title", "Targets")), targets, str(caveat) if caveat else None, str(path))


def _versus_opus(target: Target, section: dict, rows: dict[str, list[dict]]) -> dict:
    kbps, opus_kbps = f"{target.kbps:g}", f"{target.value:g}"
    diff = paired_difference(rows[f"ours@{kbps}"], rows[f"opus@{opus_kbps}"], target.metric)
    met = diff["mean"] > 0 if target.kind == "above_opus" else diff["mean"] >= 0
    return {
        "status": "met" if met else "not met",
        "ours": section["codec"][kbps][target.metric],
        "opus": section["opus"][opus_kbps][target.metric],
        "opus_kbps": target.value,
        "paired_difference": diff,
        "significant": math.isfinite(diff["ci95"]) and abs(diff["mean"]) > diff["ci95"],
    }


def _edge_cases(reports: list[dict]) -> dict:
    failing = [
        f"{ROBUSTNESS_TITLES[key]} at {report['bitrate'] / 1000:g} kbps"
        for report in reports
        for key in ROBUSTNESS_TITLES
        if not report[key]["ok"]
    ]
    return {
        "status": "not met" if failing else "met",
        "reason": "fails: " + ", ".join(failing) if failing else "every check passes (see Edge cases)",
    }


def verdicts(
    targets: CardTargets, section: dict, rows: dict[str, list[dict]], robustness: list[dict]
) -> list[dict]:
    """Each target met / not met / not evaluated, with the numbers behind the verdict.

    ``section``: the card's evaluation (``codec``/``opus`` reports by kbps); ``rows``: per-file rows by
    ``ours@K`` / ``opus@K``; ``robustness``: one robustness report per bitrate.
    """
    results = []
    for target in targets.targets:
        verdict: dict = {"target": target.title}
        if target.kind == "edge_cases":
            verdict.update(_edge_cases(robustness))
        elif f"{target.kbps:g}" not in section["codec"]:
            verdict.update(
                status="not evaluated", reason=f"{target.kbps:g} kbps not among the card's bitrates"
            )
        elif target.kind == "at_least":
            ours = section["codec"][f"{target.kbps:g}"][target.metric]
            verdict.update(
                status="met" if ours is not None and ours >= target.value else "not met", ours=ours
            )
        else:
            verdict.update(_versus_opus(target, section, rows))
        results.append(verdict)
    return results
