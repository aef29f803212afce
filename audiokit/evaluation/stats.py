"""Statistics over files: NaN-aware means and Student-t 95 % confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from audiokit.evaluation.metrics import METRICS


def nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN (without numpy's empty-slice warning) when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class Summary:
    """Mean and 95 % confidence half-width (Student t) of each metric over files.

    NaN scores (e.g. PESQ finding no speech) are left out; ``count`` says how many values each mean
    holds.
    """

    n: int
    mean: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)


def mean_ci95(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, 95 % confidence half-width (Student t) and count of the finite ``values``.

    The mean is NaN without finite values, the half-width NaN with fewer than two.
    """
    import scipy.stats  # imported here: seconds of start-up otherwise

    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    mean = float(finite.mean()) if finite.size else math.nan
    half = math.nan
    if finite.size > 1:
        half = float(scipy.stats.t.ppf(0.975, finite.size - 1) * finite.std(ddof=1) / math.sqrt(finite.size))
    return mean, half, int(finite.size)


def summarize(rows: list[dict[str, float]], names: Sequence[str] = METRICS) -> Summary:
    """Aggregate per-file rows into a :class:`Summary` of the keys ``names``."""
    summary = Summary(n=len(rows))
    for name in names:
        summary.mean[name], summary.ci95[name], summary.count[name] = mean_ci95([r[name] for r in rows])
    return summary


def paired_difference(ours: list[dict], reference: list[dict], metric: str) -> dict[str, float]:
    """Mean, 95 % CI half-width and count of the per-file difference ``ours - reference`` of ``metric``.

    Rows are matched by their ``file`` key; NaN differences are left out.
    """
    theirs = {r["file"]: r[metric] for r in reference}
    mean, half, n = mean_ci95([r[metric] - theirs[r["file"]] for r in ours])
    return {"mean": mean, "ci95": half, "n": n}
