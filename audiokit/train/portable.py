"""A run's training state as a folder of size-bounded files: safetensors shards + JSON, and back.

``checkpoints/latest.pt`` of a run (weights, EMA, optimisers, schedulers, RNG states, data position)
is 60+ MB for ``speech-16k``, more than one file may be where files are capped (a repository, a
transfer with a per-file limit). :func:`pack_run` writes
it as safetensors shards of at most ``max_shard_bytes`` each plus ``state.json`` (the structure and
every non-tensor value), and copies the run's records (``run.json``, ``recipe.yaml``,
``metrics.jsonl``, ``eval.jsonl``). :func:`unpack_run` rebuilds an identical ``latest.pt`` in a run
directory, so ``audiokit train --resume`` continues bit-exactly on another machine, and writes the EMA
weights as ``model.safetensors`` as the trainer does, so the unpacked run is a model path at once.
Nothing is unpickled: shards are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from audiokit.errors import RecipeError, UsageError
from audiokit.folders import check_target, staged_folder
from audiokit.io import atomic_path
from audiokit.train.checkpoint import RUN_CHECKPOINT as CHECKPOINT
from audiokit.train.checkpoint import RUN_WEIGHTS as WEIGHTS
from audiokit.train.checkpoint import load_resumable_state, save_checkpoint
from audiokit.train.recipe import ModelSection
from audiokit.train.records import RECORDS
from audiokit.train.task import build_model

STATE = "state.json"
FORMAT = "audiokit-train-state"
SHARD_HEADER_BYTES = 16
"""A safetensors file's fixed bytes: the header's length, and room for the header's padding."""
TENSOR_ENTRY_BYTES = 160
"""A generous bound on a tensor's entry in the header besides its name (dtype, shape, offsets)."""


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """JSON-ready form of ``value``; tensors go to ``tensors`` under their path and leave a reference."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        # keys keep their type (optimiser states are keyed by int)
        return {"__items__": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{path}: cannot store a {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return value


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors grouped in order into shards of at most ``max_bytes`` (a larger tensor is an error)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = SHARD_HEADER_BYTES
    for name, tensor in tensors.items():
        # the tensor's bytes and its entry in the header (name, dtype, shape, offsets)
        nbytes = tensor.numel() * tensor.element_size() + len(name.encode()) + TENSOR_ENTRY_BYTES
        if nbytes > max_bytes:
            largest = max(t.numel() * t.element_size() for t in tensors.values())
            raise UsageError(
                f"--max-shard-mb {max_bytes / 2**20:.3g}: {name} alone is {nbytes / 2**20:.2f} MiB; shards "
                f"must hold the largest tensor ({largest / 2**20:.2f} MiB), give at least that"
            )
        if size + nbytes > max_bytes and shards[-1]:
            shards.append({})
            size = SHARD_HEADER_BYTES
        shards[-1][name] = tensor
        size += nbytes
    return shards


def pack_run(
    run_dir: str | Path, out_dir: str | Path, max_shard_bytes: int = 24 * 2**20, force: bool = False
) -> list[Path]:
    """Write ``run_dir``'s checkpoint and records to ``out_dir``; returns the files written.

    Shards are ``state-NN.safetensors`` (each at most ``max_shard_bytes``). Everything is checked
    before anything is written; the pack is built in a temporary folder beside ``out_dir`` and renamed
    into place, so a failure leaves ``out_dir`` as it was. An existing pack is replaced only with
    ``force`` (:func:`~audiokit.folders.check_target` says what is refused); other files beside it (a
    README) are kept.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if max_shard_bytes <= 0:
        raise UsageError(f"--max-shard-mb {max_shard_bytes / 2**20:g}: must be > 0")
    check_target(out_dir, [run_dir], STATE, "packed state", force)
    state = load_resumable_state(run_dir / CHECKPOINT)
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors, "state")
    shards = _shards(tensors, max_shard_bytes)
    names = []
    with staged_folder(out_dir, force=True) as building:  # check_target refused what needs -f
        for index, shard in enumerate(shards):
            names.append(f"state-{index:02d}.safetensors")
            # written by Python: safetensors' own writer makes 0600 files and hides a failed write's errno
            (building / names[-1]).write_bytes(safetensors.torch.save(shard))
        document = {"format": FORMAT, "step": state["step"], "shards": len(shards), "state": structure}
        (building / STATE).write_text(json.dumps(document) + "\n")
        names.append(STATE)
        for name in RECORDS:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, building / name)
                names.append(name)
        _keep_others(out_dir, building)
    return [out_dir / name for name in names]


def _pack_file(name: str) -> bool:
    """Whether ``name`` is one of the files a pack is made of (a shard, the state or a record)."""
    return name == STATE or name in RECORDS or (name.startswith("state-") and name.endswith(".safetensors"))


def _keep_others(old: Path, new: Path) -> None:
    """Copy what an existing pack folder ``old`` holds besides the pack (a README) into ``new``."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if _pack_file(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def unpack_run(pack_dir: str | Path, run_dir: str | Path) -> Path:
    """Rebuild ``run_dir/checkpoints/latest.pt``, the records and the EMA weights (``model.safetensors``)
    from a folder written by :func:`pack_run`; returns the checkpoint's path."""
    pack_dir, run_dir = Path(pack_dir), Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir}: exists and is not a folder; unpack into a run directory")
    state_path = pack_dir / STATE
    if not state_path.is_file():
        raise UsageError(f"{state_path}: not found (not a packed training state)")
    try:
        document = json.loads(state_path.read_text())
        if not isinstance(document, dict):
            raise ValueError(f"{STATE} is not a JSON object")
        if document.get("format") != FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
        tensors: dict[str, torch.Tensor] = {}
        for index in range(int(document["shards"])):
            tensors.update(safetensors.torch.load_file(str(pack_dir / f"state-{index:02d}.safetensors")))
        state = _decode(document["state"], tensors)
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError("it holds no model weights")
    except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise UsageError(f"{pack_dir}: unreadable packed training state ({message})") from None
    for existing in [run_dir / CHECKPOINT, run_dir / WEIGHTS, *(run_dir / name for name in RECORDS)]:
        if existing.is_file():  # a run's records without a checkpoint are still that run's
            raise UsageError(f"{existing}: already exists; unpack into another run directory")
    copied: list[Path] = []
    try:  # the records without the checkpoint would refuse the next unpack: they go if it fails
        for name in RECORDS:
            if (pack_dir / name).is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(run_dir / name) as tmp:
                    shutil.copyfile(pack_dir / name, tmp)
                copied.append(run_dir / name)
        path = save_checkpoint(run_dir / CHECKPOINT, state)
    except BaseException:  # an interruption too
        for record in copied:
            record.unlink(missing_ok=True)
        raise
    _save_ema_weights(state, run_dir)
    return path


def _save_ema_weights(state: dict[str, Any], run_dir: Path) -> Path | None:
    """``run_dir/model.safetensors`` (+ ``.json``) from the state's EMA weights, as the trainer writes
    them with every checkpoint, so that an unpacked run is a model path at once (``-m RUN``); None
    when the state does not say which model it holds (written before checkpoints held their recipe)."""
    recipe, ema = state.get("recipe"), state.get("ema")
    if not isinstance(recipe, dict) or not isinstance(ema, dict) or not isinstance(ema.get("module"), dict):
        return None
    try:
        model = build_model(ModelSection(**recipe["model"]), "the packed state's recipe")
        model.load_state_dict(ema["module"], strict=True)
    except (KeyError, TypeError, RuntimeError, RecipeError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise UsageError(
            f"{run_dir / CHECKPOINT}: written, but its EMA weights fit no model ({message})"
        ) from None
    return model.save_pretrained(run_dir / WEIGHTS, extra={"step": state["step"]})
