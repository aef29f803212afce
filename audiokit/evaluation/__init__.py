"""Evaluation: metrics, file pairing, paired runs, statistics, baselines, figures, robustness checks and
model cards.

* :mod:`~audiokit.evaluation.metrics`: PESQ, STOI, SI-SDR, spectral distances, codebook statistics;
* :mod:`~audiokit.evaluation.pairing`: reference/test files by relative path;
* :mod:`~audiokit.evaluation.scoring` / :mod:`~audiokit.evaluation.stats`: per-file scores, means and
  Student-t intervals (also of paired differences);
* :mod:`~audiokit.evaluation.paired`: :func:`evaluate`, the run behind ``audiokit eval``;
* :mod:`~audiokit.evaluation.baselines`: Opus, sinc, identity;
* :mod:`~audiokit.evaluation.plots`, :mod:`~audiokit.evaluation.robustness`,
  :mod:`~audiokit.evaluation.model_card`, :mod:`~audiokit.evaluation.demo`.
"""

from audiokit.evaluation.metrics import METRICS
from audiokit.evaluation.paired import EvalRequest, evaluate, evaluate_pair
from audiokit.evaluation.pairing import FilePair, check_compatible, pair_files
from audiokit.evaluation.scoring import score_pair
from audiokit.evaluation.stats import Summary, mean_ci95, nanmean, paired_difference, summarize
from audiokit.io import find_audio

__all__ = [
    "METRICS",
    "EvalRequest",
    "FilePair",
    "Summary",
    "check_compatible",
    "evaluate",
    "evaluate_pair",
    "find_audio",
    "mean_ci95",
    "nanmean",
    "pair_files",
    "paired_difference",
    "score_pair",
    "summarize",
]
