"""Checkpoints: atomic ``torch.save`` of tensors and plain containers, loaded with ``weights_only=True``.

A training checkpoint is a dict with ``step``, ``model``, ``ema``, ``optimizers`` and ``schedulers``
(one per trained part, by role: ``generator`` and ``discriminator`` for a codec), ``rng`` (one entry
per process: python, numpy, torch CPU and CUDA states) and ``data`` (the data position, i.e. the step
the next batch is drawn for), plus ``recipe`` (the resolved recipe as nested dicts) and the task's
parts and state (``discriminator``, ``balancer`` for a codec). Nothing in it needs pickle to load.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiokit.errors import UsageError
from audiokit.io import atomic_path

RUN_CHECKPOINT = "checkpoints/latest.pt"  # a run directory's checkpoint, relative to the run directory
RUN_WEIGHTS = "model.safetensors"  # the EMA weights the trainer saves there with every checkpoint
# what a checkpoint must hold to be resumed (or packed to be resumed elsewhere)
RESUME_KEYS = ("step", "model", "ema", "optimizers", "schedulers", "rng", "data")


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU, and CUDA if present) random states of this process."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename): a crash never leaves half a file.
    A failed write is the :class:`OSError` that says why ("No space left on device"), not the
    ``RuntimeError`` torch's zip writer raises after it ("unexpected pos")."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        try:
            torch.save(state, file)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU; no pickle code is run)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        message = " ".join(str(exc).split())[:200]
        raise UsageError(
            f"{path}: not a readable audiokit checkpoint ({type(exc).__name__}: {message})"
        ) from None


def load_training_state(path: str | Path) -> dict[str, Any]:
    """:func:`load_checkpoint` of a training checkpoint: a mapping that holds the model's weights."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise UsageError(f"{path}: not an audiokit training checkpoint (no model weights in it)")
    return state


def load_resumable_state(path: str | Path) -> dict[str, Any]:
    """:func:`load_training_state` of a checkpoint that holds all a resume needs (:data:`RESUME_KEYS`),
    else one error naming what it lacks (a file of weights alone saved as a checkpoint, say)."""
    state = load_training_state(path)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise UsageError(
            f"{path}: holds no {', '.join(missing)}, so it cannot be resumed (an audiokit checkpoint holds "
            f"{', '.join(RESUME_KEYS)}); to start a new run from its weights: --init {path} --run-dir NEW_DIR"
        )
    return state
