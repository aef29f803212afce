"""A model card's targets, read from a YAML (or JSON) file, and their verdicts on the card's measurements.

The file (e.g. ``docs/models/speech-16k-targets.yaml``)::

    title: Targets (issue 5)          # the card's section heading
    caveat: The validation speech ... # optional: a paragraph on what the numbers do not say
    targets:
      - {title: "6 kbps: PESQ-WB above Opus 6 kbps", kbps: 6, metric: pesq, above_opus: 6}
      - {title: "3 kbps: STOI no worse than Opus 6 kbps", kbps: 3, metric: stoi, no_worse_than_opus: 6}
      - {title: "aim: PESQ-WB >= 2.5 at 6 kbps", kbps: 6, metric: pesq, at_least: 2.5}
      - {title: "no NaN ... exact decoded lengths", edge_cases: true}

``above_opus: K`` / ``no_worse_than_opus: K``: the mean per-file improvement over Opus at K kbps
(ours - Opus, paired over the same files; Opus - ours for :data:`LOWER_IS_BETTER`) is > 0 / >= 0;
``at_least: V``: our mean is >= V; ``edge_cases``: every check of
:func:`audiokit.evaluation.robustness.robustness_report` passes at every bitrate.

Cards measured under named conditions (the enhancer's ``noisy``/``clean``/``silence``, the bandwidth
extender's ``narrowband``/``mu-law``/...) take targets with a ``condition`` instead of ``kbps``, on a
``system`` (default ``ours``)::

      - {title: "PESQ-WB +0.8 over the noisy input", condition: noisy, metric: pesq, above: noisy, by: 0.8}
      - {title: "STOI above RNNoise", condition: noisy, metric: stoi, above: rnnoise}
      - {title: "STOI not below sinc", condition: narrowband, metric: stoi, no_worse_than: sinc}
      - {title: "LSD at most half of sinc's", condition: narrowband, metric: lsd, at_most: 0.5,
         ratio_to: sinc}
      - {title: "silence out below -60 dBFS", condition: silence, metric: peak_dbfs, at_most: -60}

``above: S`` / ``no_worse_than: S``: the mean per-file improvement over system S (paired; lower is
better for :data:`LOWER_IS_BETTER`) is > 0 / >= 0, or >= ``by`` when given; ``at_least`` /
``at_most``: the system's mean (over ``ratio_to``'s mean, when given) is >= / <= the value.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from audiokit.errors import UsageError
from audiokit.evaluation.metrics import HIGH_BAND_LSD, METRICS
from audiokit.evaluation.robustness import ROBUSTNESS_TITLES
from audiokit.evaluation.stats import paired_difference

KINDS = ("above_opus", "no_worse_than_opus", "at_least", "edge_cases")
COMPARISONS = ("above", "no_worse_than")
BOUNDS = ("at_least", "at_most")
PEAK_DBFS = "peak_dbfs"
"""Peak level of a model's output in dBFS (the enhancer card's digital-silence check)."""
TARGET_METRICS = (*METRICS, HIGH_BAND_LSD, PEAK_DBFS)
LOWER_IS_BETTER = frozenset({"lsd", HIGH_BAND_LSD, "mel_distance", "stft_distance", PEAK_DBFS})


@dataclass(frozen=True)
class Target:
    """One target: ``kind`` (one of :data:`KINDS`, :data:`COMPARISONS`, :data:`BOUNDS`) with its
    ``value`` (Opus kbps, the threshold, or the margin ``by``), on ``metric`` of ours at ``kbps`` (not
    used by ``edge_cases``), or of ``system`` under ``condition`` compared with system ``other``."""

    title: str
    kind: str
    value: float | None = None
    kbps: float | None = None
    metric: str | None = None
    condition: str | None = None
    system: str = "ours"
    other: str | None = None


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


def _number(value: object, where: str, key: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _condition_target(entry: dict, where: str) -> Target:
    """A target on a named condition (module docstring)."""
    valid = ["title", "condition", "metric", "system", *COMPARISONS, *BOUNDS, "by", "ratio_to"]
    for key in entry:
        if key not in valid:
            raise _unknown(where, key, valid)
    kinds = [k for k in (*COMPARISONS, *BOUNDS) if k in entry]
    if len(kinds) != 1 or "title" not in entry:
        raise UsageError(f"{where}: needs a title and exactly one of {', '.join((*COMPARISONS, *BOUNDS))}")
    kind = kinds[0]
    if entry.get("metric") not in TARGET_METRICS:
        raise UsageError(f"{where}: metric must be one of {', '.join(TARGET_METRICS)}")
    if "by" in entry and kind not in COMPARISONS or "ratio_to" in entry and kind not in BOUNDS:
        raise UsageError(f"{where}: by goes with above/no_worse_than, ratio_to with at_least/at_most")
    if kind in COMPARISONS:
        other, value = str(entry[kind]), _number(entry["by"], where, "by") if "by" in entry else None
    else:
        other, value = entry.get("ratio_to"), _number(entry[kind], where, kind)
    return Target(
        str(entry["title"]),
        kind,
        value,
        metric=entry["metric"],
        condition=str(entry["condition"]),
        system=str(entry.get("system", "ours")),
        other=None if other is None else str(other),
    )


def _target(entry: object, where: str) -> Target:
    if not isinstance(entry, dict):
        raise UsageError(
            f"{where}: expected a mapping with title, kbps, metric and one of {', '.join(KINDS)}"
        )
    if "condition" in entry:
        return _condition_target(entry, where)
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
    return Target(
        str(entry["title"]), kind, _number(entry[kind], where, kind), float(entry["kbps"]), entry["metric"]
    )


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
    gain = _gain(target.metric, diff["mean"])  # a lower LSD/distance than Opus's is the better one
    met = gain > 0 if target.kind == "above_opus" else gain >= 0
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
        if target.condition is not None:
            verdict.update(status="not evaluated", reason=f"a codec card measures no {target.condition!r}")
        elif target.kind == "edge_cases":
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


def _gain(metric: str, difference: float) -> float:
    """``difference`` (ours - other) turned into an improvement: negated where lower is better."""
    return -difference if metric in LOWER_IS_BETTER else difference


def _comparison(target: Target, systems: dict[str, dict], rows: dict[str, list[dict]]) -> dict:
    diff = paired_difference(rows[target.system], rows[target.other], target.metric)
    gain = _gain(target.metric, diff["mean"])
    if target.value is not None:
        met = gain >= target.value
    else:
        met = gain > 0 if target.kind == "above" else gain >= 0
    return {
        "status": "met" if met else "not met",
        "ours": systems[target.system][target.metric],
        "other": target.other,
        "other_value": systems[target.other][target.metric],
        "paired_difference": diff,
        "significant": math.isfinite(diff["ci95"]) and abs(diff["mean"]) > diff["ci95"],
    }


def _bound(target: Target, systems: dict[str, dict]) -> dict:
    ours = systems[target.system][target.metric]
    verdict: dict = {"ours": ours}
    value = ours
    if target.other is not None:
        theirs = systems[target.other][target.metric]
        value = None if ours is None or not theirs else ours / theirs
        verdict.update(other=target.other, other_value=theirs, ratio=value)
    if value is None:
        met = False
    else:
        met = value >= target.value if target.kind == "at_least" else value <= target.value
    return {"status": "met" if met else "not met", **verdict}


def condition_verdicts(
    targets: CardTargets, section: dict[str, dict[str, dict | None]], rows: dict[str, dict[str, list[dict]]]
) -> list[dict]:
    """Each target on a named condition met / not met / not evaluated, with the numbers behind it.

    ``section``: per condition, each system's report (means by metric; None where not measured);
    ``rows``: per condition, each system's per-file rows (``file`` and the metrics) for paired
    comparisons.
    """
    results = []
    for target in targets.targets:
        verdict: dict = {"target": target.title}
        systems = section.get(target.condition or "") or {}
        missing = [s for s in (target.system, target.other) if s is not None and systems.get(s) is None]
        if target.condition is None:
            verdict.update(status="not evaluated", reason="a codec target (kbps): this card codes nothing")
        elif missing:
            verdict.update(status="not evaluated", reason=f"no {' or '.join(missing)} on {target.condition}")
        elif target.kind in COMPARISONS:
            verdict.update(_comparison(target, systems, rows[target.condition]))
        else:
            verdict.update(_bound(target, systems))
        results.append(verdict)
    return results
