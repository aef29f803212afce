"""What every model card shares: the weights' identity, the training record and targets around the
measurements, the ``audiokit card`` command line, subsets of an evaluation set and parallel scoring."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from audiokit.evaluation.card_markdown import shown_path
from audiokit.evaluation.targets import CardTargets, condition_verdicts, load_targets
from audiokit.evaluation.training_record import training_data, training_record
from audiokit.models import AudioModel, is_shipped, resolve_weights
from audiokit.progress import progress
from audiokit.provenance import run_info

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class CardOptions:
    """What every card request holds: ``weights`` (shipped name, run directory or ``.safetensors``)
    trained in ``run_dir``, measured with ``jobs`` worker processes, held to the ``targets`` file (None:
    no targets), written to ``out`` as ``<name>.md/.json`` (None: the model's name). ``init_card``: the
    ``card.json`` of the weights the run started from, when those beside the recorded path have been
    replaced since. Subclasses add what is measured (:meth:`data_options`)."""

    weights: str
    run_dir: Path
    jobs: int = 1
    out: Path = Path("docs/models")
    name: str | None = None
    init_card: Path | None = None
    targets: Path | None = None
    quiet: bool = True

    def data_options(self) -> list[tuple[str, object]]:
        """The ``audiokit card`` options that say what is measured, as ``(flag, value)``."""
        return []

    def data_paths(self) -> list[str]:
        """Paths among :meth:`data_options`'s values shown under ``$AUDIOKIT_DATA``."""
        return []

    def command(self) -> str:
        """The ``audiokit card`` command line that makes this card again (data paths under
        ``$AUDIOKIT_DATA``; with ``-f``, as it replaces this card)."""
        options = [("-m", self.weights), ("--run-dir", self.run_dir), *self.data_options()]
        options += [("--jobs", self.jobs), ("--out", self.out), ("--name", self.name)]
        options += [("--init-card", self.init_card), ("--targets", self.targets)]
        return card_command(options, self.data_paths()) + " -f"  # -f: the card it makes is there already


def model_weights(weights: str, model: AudioModel, sha256: str) -> dict:
    """Path (as the repository names shipped weights), model name, sha256, training step (or, for an
    average of weights, its ingredients) and sample rate (Hz) of the ``model`` loaded from ``weights``."""
    path = resolve_weights(weights)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    shipped = is_shipped(weights)
    if shipped:  # as the repository names it, not where this checkout happens to be
        path = Path("audiokit") / "weights" / path.name
    info = {"path": str(path), "name": model.name, "sha256": sha256, "shipped": shipped}
    if "step" in meta:
        info["step"] = meta["step"]
    if meta.get("averaged_from"):  # audiokit checkpoint average
        info["averaged_from"] = meta["averaged_from"]
        info["averaged_tensors"] = meta.get("averaged_tensors", [])
    if meta.get("float16_tensors"):  # stored as float16 (save_pretrained's float16)
        info["float16_tensors"] = meta["float16_tensors"]
    info["sample_rate"] = model.sample_rate
    return info


def card_command(options: Sequence[tuple[str, object]], data: Iterable[str] = ()) -> str:
    """``audiokit card`` with ``options`` (``(flag, value)``; None values left out, tuples spread over
    several words); the ``data`` paths are shown under ``$AUDIOKIT_DATA``."""
    data = set(data)
    words = []
    for flag, value in options:
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        words += [flag, *(shown_path(str(v)) if str(v) in data else shlex.quote(str(v)) for v in values)]
    return "audiokit card " + " ".join(words)


def evenly_spaced(items: Sequence[T], count: int | None) -> list[T]:
    """``count`` items spread evenly over ``items`` (first and every ``len / count``-th), all of them
    when ``count`` is None or not smaller."""
    if count is None or count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def link_subset(roots: Sequence[Path], names: Iterable[str], into: Path) -> list[Path]:
    """Symlink ``root/name`` for each root and name under ``into/<i>/name`` (the same relative paths, so
    an evaluation pairs them as before); returns the ``into/<i>`` folders, one per root."""
    folders = [into / str(i) for i in range(len(roots))]
    for name in names:
        for root, folder in zip(roots, folders, strict=True):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to((root / name).resolve())
    return folders


def _one_thread(fn: Callable[[T], R], item: T) -> R:
    torch.set_num_threads(1)
    return fn(item)


def map_jobs(
    fn: Callable[[T], R], items: Sequence[T], jobs: int, desc: str, quiet: bool, label: Callable[[T], str]
) -> list[R]:
    """``[fn(item) for item in items]`` over ``jobs`` worker processes (1 thread each; in this process
    when ``jobs`` is 1), with progress on stderr unless ``quiet``."""
    if jobs <= 1 or len(items) <= 1:
        return [fn(item) for item in progress(items, desc, len(items), quiet, label=label)]
    with ProcessPoolExecutor(min(jobs, os.cpu_count() or 1)) as pool:
        return list(progress(pool.map(partial(_one_thread, fn), items), desc, len(items), quiet))


def build_condition_card(
    family: str,
    request: CardOptions,
    load: Callable[[str], tuple[AudioModel, str]],
    measure: Callable[[Any, AudioModel], tuple[dict, dict[str, dict[str, list[dict]]]]],
) -> dict:
    """The card's JSON for a family measured under named conditions: ``measure(request, model)`` gives
    the evaluation section (with ``conditions``: reports by condition and system) and the per-file rows
    by condition and system, judged by the targets file
    (:func:`~audiokit.evaluation.targets.condition_verdicts`); then the training record of the run and
    its data, where the card was generated and the command that regenerates it."""
    targets = load_targets(request.targets) if request.targets is not None else CardTargets()
    model, sha256 = load(request.weights)
    weights = model_weights(request.weights, model, sha256)
    section, rows = measure(request, model)
    training = training_record(request.run_dir, request.init_card)
    return {
        "family": family,
        "name": request.name or weights["name"],
        "generated": run_info(),
        "weights": weights,
        "evaluation": section,
        "targets_title": targets.title,
        "targets_file": targets.source,
        "targets": condition_verdicts(targets, section["conditions"], rows),
        "training": training,
        "training_data": training_data(training["recipe_yaml"]),
        "caveat": targets.caveat,
        "command": request.command(),
    }
