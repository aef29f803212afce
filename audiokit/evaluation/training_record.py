"""The training record of a run directory for a model card: recipe, commits, sessions, steps, wall time,
the runs its weights descend from (``--init``) and the training data by package with its licences."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import safetensors.torch
import yaml

from audiokit import io
from audiokit.data.manifest import package_totals, read_jsonl
from audiokit.data.sources import SOURCES
from audiokit.errors import ModelError, RecipeError, UsageError
from audiokit.models import resolve_weights
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.records import shown_command


def _json(path: Path) -> dict:
    """The JSON object in ``path``; an unreadable one is a one-line :class:`UsageError` naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path}: not a JSON object")
    return value


def _jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file the trainer may not have written yet (none then). A last line cut short (a
    run killed while appending it; the trainer drops it when it resumes) is left out; another bad line
    is a one-line :class:`UsageError` naming ``file:line``."""
    if not path.is_file():
        return []
    try:
        return read_jsonl(path, cut_end=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _recipe_argument(command: list[str]) -> str | None:
    """The recipe path of a recorded ``audiokit train RECIPE ...`` command line."""
    if "train" in command:
        rest = command[command.index("train") + 1 :]
        return next((a for a in rest if a.endswith((".yaml", ".yml"))), None)
    return None


def _purged(rows: list[dict], start_steps: list[int]) -> list[dict]:
    """``rows`` without those a later session logged again: where the steps go back (a session resumed
    from a checkpoint older than a crash, recorded before the trainer purged such lines), the rows after
    that session's start step are dropped, as TensorBoard's ``purge_step`` does."""
    kept: list[dict] = []
    for row in rows:
        step = row.get("step")
        if step is not None and kept and step <= kept[-1].get("step", -1):
            start = max((s for s in start_steps if s < step), default=0)
            kept = [r for r in kept if r.get("step", -1) <= start]
        kept.append(row)
    return kept


def _loop_seconds(metrics: list[dict], start_steps: list[int]) -> float:
    """Wall time of the training loops: each logged window's steps over its measured steps/second.

    A window starts at the previous logged step, or at a session's start step where the steps go back.
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
    """The ``--init`` weights file and the weights' sha256 its ``model.json`` records (``weights_sha256``
    where tensors are stored as float16, else the file's ``sha256``; None where not found)."""
    try:
        path = resolve_weights(init)
    except ModelError:
        return None, None
    meta = _json(path.with_suffix(".json")) if path.with_suffix(".json").is_file() else {}
    return path, meta.get("weights_sha256") or meta.get("sha256")


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
    card = _json(card_path)
    described = card.get("weights", {}).get("sha256")
    if described != sha256 or described == own_sha256 or "training" not in card:
        return None
    return card["training"] | {"weights": init, "weights_sha256": sha256, "weights_step": _weights_step(card)}


def _named_init_card(start: dict | None, own_sha256: str | None, init_card: Path) -> dict:
    """The training record in ``init_card``, checked against the run's recorded init sha256 (runs from
    before the trainer recorded it are taken at the user's word) and its own weights."""
    if start is None:
        raise UsageError(f"--init-card {init_card}: the run did not start from --init weights")
    if not init_card.is_file():
        raise UsageError(f"--init-card {init_card}: no such file")
    card = _json(init_card)
    described = card.get("weights", {}).get("sha256")
    expected = start.get("init_sha256")
    if "training" not in card or described is None:
        raise UsageError(f"--init-card {init_card}: not a model card (no weights sha256 or training record)")
    if described == own_sha256 or (expected is not None and described != expected):
        started = f"started from {expected[:16]}..." if expected else "wrote these very weights"
        raise UsageError(f"--init-card {init_card}: describes weights {described[:16]}..., the run {started}")
    return card["training"] | {
        "weights": start["init"],
        "weights_sha256": described,
        "weights_step": _weights_step(card),
    }


def _weights_step(card: dict) -> int | None:
    """The training step of the weights a card describes (None when not one step: averaged weights)."""
    step = card.get("weights", {}).get("step")
    return step if isinstance(step, int) else None


def steps_to_weights(record: dict) -> int:
    """Training steps in all behind the weights a run started from (``record``: its ``previous``): the
    steps of the runs before it plus its step at those weights, which may be before the run's last
    (``steps``: the run may have gone on after them)."""
    earlier = record.get("total_steps", record["steps"]) - record["steps"]
    step = record.get("weights_step")
    return earlier + (step if step is not None else record["steps"])


def weights_sha256(path: Path) -> str:
    """sha256 of the weights file at ``path`` (what its ``.json`` records and the trainer hashes)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint_sha256(path: Path) -> str | None:
    """sha256 of the EMA weights of the training checkpoint ``path`` as ``model.safetensors`` holds them
    (None when it is not a readable checkpoint)."""
    try:
        module = load_checkpoint(path)["ema"]["module"]
    except (UsageError, KeyError, TypeError):
        return None
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.items()}
    return hashlib.sha256(safetensors.torch.save(tensors)).hexdigest()


def _architecture(config_path: Path) -> tuple | None:
    """The format and typed config a weights file's ``.json`` records (None when there is none)."""
    if not config_path.is_file():
        return None
    meta = _json(config_path)
    return meta.get("format"), meta.get("config")


def check_run_weights(weights: str, run_dir: Path) -> None:
    """Refuse (:class:`UsageError`) weights that the run in ``run_dir`` did not save: their sha256 must
    be that of the run's ``model.safetensors`` (``model.json``), one ``run.json`` records (``weights``:
    every save since the trainer recorded them) or the EMA weights of a checkpoint in ``checkpoints/``;
    or they are an average of such weights (:func:`audiokit.train.averaging.average_weights`: every sha256
    their JSON's ``averaged_from`` names is the run's).
    A run from before ``run.json`` recorded its saves (no ``weights``) cannot name its earlier weights, so
    there weights of the run's own architecture (format and config of ``model.json``) are taken."""
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise UsageError(f"--run-dir {run_dir}: no run.json (not an `audiokit train` run directory)")
    path = resolve_weights(weights)
    sha256 = weights_sha256(path)
    saved_by_run = _saves_of(run_dir)
    if saved_by_run(sha256):
        return
    meta_path = path.with_suffix(".json")
    ingredients = _json(meta_path).get("averaged_from") if meta_path.is_file() else None
    if ingredients and all(saved_by_run(i.get("sha256")) for i in ingredients):
        return
    own = run_dir / "model.json"
    recorded = _json(info_path).get("weights")
    if recorded is None and _architecture(own) is not None and _architecture(own) == _architecture(meta_path):
        return
    raise UsageError(
        f"-m {weights}: these weights (sha256 {sha256[:16]}...) are not of the run in {run_dir}: neither its "
        "model.safetensors, nor weights its run.json records, nor a checkpoint's, nor an average of those; "
        "give the run directory that trained them"
    )


def _saves_of(run_dir: Path) -> Callable[[str | None], bool]:
    """Whether the run in ``run_dir`` saved weights of a sha256: its ``model.safetensors``, a save its
    ``run.json`` records or a checkpoint's EMA weights (those loaded once, and only when asked about)."""
    own = run_dir / "model.json"
    own_sha256 = _json(own).get("sha256") if own.is_file() else None
    recorded = _json(run_dir / "run.json").get("weights") or {}
    checkpoints: set[str | None] | None = None

    def saved(sha256: str | None) -> bool:
        nonlocal checkpoints
        if sha256 is not None and (sha256 == own_sha256 or sha256 in recorded):
            return True
        if checkpoints is None:
            checkpoints = {_checkpoint_sha256(p) for p in sorted((run_dir / "checkpoints").glob("*.pt"))}
        return sha256 is not None and sha256 in checkpoints

    return saved


def training_record(run_dir: Path, init_card: Path | None = None) -> dict:
    """Recipe, commits, sessions, steps, hardware and wall time of a training run directory.

    ``total_steps`` adds the steps of the runs the weights descend from through ``--init``
    (``previous``, nested when those started from earlier weights too; ``init_card``: see
    :func:`previous_training`).
    """
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise UsageError(f"--run-dir {run_dir}: no run.json (not an `audiokit train` run directory)")
    info = _json(info_path)
    sessions = info.get("sessions", [])
    if not isinstance(sessions, list) or not sessions:
        raise UsageError(
            f"{info_path}: records no training session, so no card can say how these weights were made"
        )
    start_steps = [s.get("start_step", 0) for s in sessions]
    metrics = _purged(_jsonl(run_dir / "metrics.jsonl"), start_steps)
    evaluations = _purged(_jsonl(run_dir / "eval.jsonl"), start_steps)
    recipe_text = (run_dir / "recipe.yaml").read_text() if (run_dir / "recipe.yaml").is_file() else None
    # a session stopped between two log lines records its last step only in run.json
    ended = [s["end_step"] for s in sessions if s.get("end_step") is not None]
    steps = max([r["step"] for r in metrics + evaluations if "step" in r] + ended, default=0)
    own = run_dir / "model.json"
    own_sha256 = _json(own).get("sha256") if own.is_file() else None
    previous = previous_training(sessions, own_sha256, init_card)
    return {
        "run_dir": str(run_dir),
        # the latest session's: the one whose resolved recipe.yaml the run holds (an early session may
        # have read the recipe from a scratch checkout that is gone)
        "recipe_path": next(
            (p for s in reversed(sessions) if (p := _recipe_argument(s.get("command", [])))), None
        ),
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
            | {"command": shlex.join(shown_command(s.get("command", [])))}
            for s in sessions
        ],
        "steps": steps,
        "total_steps": steps + (steps_to_weights(previous) if previous else 0),
        "previous": previous,
        "loop_wall_seconds": round(_loop_seconds(metrics, start_steps), 1),
        "session_wall_seconds": _session_seconds(sessions),
        "last_eval": evaluations[-1] if evaluations else None,
        "versions": sessions[-1].get("versions") if sessions else None,
    }


def training_data(recipe_yaml: str | None) -> list[dict]:
    """The recipe's training audio by package: ``data.train``, and ``data.noise`` and ``data.music`` when
    mixed in (``data.noise_probability``; an enhancer's ``mixture.noise_weights`` of recorded noise and
    of music).

    Each entry: role, the manifest or directory, and per package clips, hours, the licences the
    manifest records, those of the allowlist (:mod:`audiokit.data.sources`) and whether the package is
    a training package of the allowlist at all.
    """
    from audiokit.train.data import resolve_source
    from audiokit.train.recipe import recipe_from_dict

    if recipe_yaml is None:
        return []
    recipe = recipe_from_dict(yaml.safe_load(recipe_yaml), "recipe.yaml")
    data = recipe.data
    weights = recipe.mixture.noise_weights if hasattr(recipe, "mixture") else {}
    mixed = {
        "noise": data.noise_probability > 0 or weights.get("recorded", 0) > 0,
        "music": weights.get("music", 0) > 0,
    }
    wanted = [("train", data.train)] + [
        (key, getattr(data, key)) for key in ("noise", "music") if getattr(data, key) and mixed[key]
    ]
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


def lineage(training: dict) -> list[dict]:
    """The training records the weights descend from, earliest first, ending with ``training``."""
    chain = [training]
    while chain[0].get("previous"):
        chain.insert(0, chain[0]["previous"])
    return chain
