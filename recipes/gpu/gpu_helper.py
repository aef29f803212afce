"""Helpers of recipes/gpu/train_speech16k.sh (stdlib at the top: the first action runs before the deps
are known to be there).

    python3 recipes/gpu/gpu_helper.py missing MODULE...            print the modules that do not import
    python3 recipes/gpu/gpu_helper.py init RECIPE CANDIDATE... [-- KEY=VALUE...]
                                                                  print the first candidate whose weights
                                                                  fit the recipe's model ('' if none)
    python3 recipes/gpu/gpu_helper.py lineage PREVIOUS_JSON       print the seed for this call
    python3 recipes/gpu/gpu_helper.py collect RUN_DIR OUT PREVIOUS_JSON INIT PACK LOG RETURN
                                                                  copy logs and the EMA weights (RETURN=
                                                                  weights; in 15 MiB parts when over
                                                                  16 MiB) or the whole checkpoint in
                                                                  15 MiB parts (RETURN=checkpoint, when it
                                                                  fits; else the weights) into OUT
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

MIB = 1 << 20
FILE_LIMIT = 16 * MIB  # each file that comes back from $OUT
TOTAL_LIMIT = 64 * MIB  # all of them together
COUNT_LIMIT = 8  # files that come back
PART_BYTES = 15 * MIB  # size of the pieces of a split checkpoint or weights file


def missing(modules: list[str]) -> None:
    gone = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # an ImportError, or OSError from a missing shared library (libsndfile)
            gone.append(name)
    print(" ".join(gone))


def choose_init(recipe: str, candidates: list[str], overrides: list[str]) -> None:
    from audiokit.models import AudioModel
    from audiokit.train.recipe import load_recipe
    from audiokit.train.task import build_model

    model = build_model(load_recipe(recipe, overrides).model)
    for candidate in candidates:
        if not Path(candidate).is_file():
            continue
        try:
            model.load_state_dict(AudioModel.from_pretrained(candidate).state_dict(), strict=True)
        except Exception as exc:  # wrong architecture, corrupt file...
            reason = " ".join(str(exc).split())[:160]
            print(f"gpu: {candidate} does not fit {recipe} ({reason}); skipped", file=sys.stderr)
            continue
        print(candidate)
        return
    print("")


def _previous(path: str) -> dict:
    file = Path(path)
    return json.loads(file.read_text()) if path and file.is_file() else {"calls": [], "total_steps": 0}


def lineage_seed(previous: str) -> None:
    print(len(_previous(previous)["calls"]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _last_line(path: Path) -> dict:
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _split(source: Path, dest: Path) -> int:
    """Write ``source`` as ``<name>.part0, part1...`` of PART_BYTES; returns the number of parts."""
    parts = 0
    with open(source, "rb") as handle:
        while block := handle.read(PART_BYTES):
            (dest / f"{source.name}.part{parts}").write_bytes(block)
            parts += 1
    return parts


def _logs(run: Path, log: str, target: Path) -> None:
    """``logs.tar.gz``: recipe, run info, metrics, evaluations, the console log and TensorBoard (dropped
    when the archive would be over 16 MiB)."""
    for tensorboard in (True, False):
        with tarfile.open(target, "w:gz") as tar:
            for name in ("recipe.yaml", "run.json", "metrics.jsonl", "eval.jsonl"):
                if (run / name).is_file():
                    tar.add(run / name, arcname=name)
            if log and Path(log).is_file():
                tar.add(log, arcname="train.log")
            if tensorboard and (run / "tensorboard").is_dir():
                tar.add(run / "tensorboard", arcname="tensorboard")
        if target.stat().st_size <= FILE_LIMIT:
            return


def collect(run_dir: str, out: str, previous: str, init: str, pack: str, log: str, mode: str) -> None:
    run, dest = Path(run_dir), Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    _logs(run, log, dest / "logs.tar.gz")
    checkpoint = run / "checkpoints" / "latest.pt"
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0
    # the checkpoint holds the EMA weights too; it comes back as ceil(size / 15 MiB) files beside the
    # logs and lineage.json
    room = TOTAL_LIMIT - (dest / "logs.tar.gz").stat().st_size - 64 * 1024
    whole = mode == "checkpoint" and 0 < size <= room and -(-size // PART_BYTES) + 2 <= COUNT_LIMIT
    weights_parts = 0
    for name in () if whole else ("model.safetensors", "model.json"):
        if not (run / name).is_file():
            continue
        if (run / name).stat().st_size > FILE_LIMIT:  # a file over the limit would not come back at all
            weights_parts = _split(run / name, dest)
        else:
            (dest / name).write_bytes((run / name).read_bytes())

    step = _last_line(run / "metrics.jsonl").get("step")
    model_json = json.loads((run / "model.json").read_text()) if (run / "model.json").is_file() else {}
    steps = int(model_json.get("step") or step or 0)
    info = _previous(previous)
    sessions = json.loads((run / "run.json").read_text())["sessions"] if (run / "run.json").is_file() else []
    start = int(sessions[-1]["start_step"]) if sessions else 0
    pack_json = Path(pack) / "PACK.json"
    packed = json.loads(pack_json.read_text()) if pack_json.is_file() else {}
    info["calls"].append(
        {
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "init": init,
            "start_step": start,
            "end_step": steps,
            "pack": {k: packed.get(k) for k in ("source_manifest", "clips", "hours", "kbps", "seed")},
            "last_metrics": _last_line(run / "metrics.jsonl"),
            "last_eval": _last_line(run / "eval.jsonl"),
        }
    )
    info["total_steps"] = int(info["total_steps"]) + steps - start

    if weights_parts:
        weights = run / "model.safetensors"
        info["weights"] = {
            "parts": weights_parts,
            "bytes": weights.stat().st_size,
            "sha256": _sha256(weights),
        }
        print(
            f"gpu: weights {weights.stat().st_size / MIB:.1f} MiB come back in {weights_parts} parts "
            "(cat model.safetensors.part* > model.safetensors)"
        )
    else:
        info.pop("weights", None)
    if whole:
        parts = _split(checkpoint, dest)
        info["checkpoint"] = {"parts": parts, "bytes": size, "sha256": _sha256(checkpoint)}
        print(
            f"gpu: checkpoint {size / MIB:.1f} MiB comes back in {parts} parts "
            "(cat latest.pt.part* > latest.pt)"
        )
    elif size:
        info["checkpoint"] = {"parts": 0, "bytes": size}
        print(
            f"gpu: checkpoint {size / MIB:.1f} MiB (model, EMA, optimisers, discriminators) stays behind: "
            "only the EMA weights come back (continue with --init; RETURN=checkpoint brings the "
            "checkpoint instead when it fits)"
        )
    for folder in (dest, run):  # the run's copy serves a later --resume on the same machine
        (folder / "lineage.json").write_text(json.dumps(info, indent=1) + "\n")
    for path in sorted(dest.iterdir()):
        flag = "  (OVER 16 MiB: will not come back)" if path.stat().st_size > FILE_LIMIT else ""
        print(f"gpu: $OUT/{path.name} {path.stat().st_size / MIB:.2f} MiB{flag}")


def main(argv: list[str]) -> None:
    action, args = argv[0], argv[1:]
    if action == "missing":
        missing(args)
    elif action == "init":
        split = args.index("--") if "--" in args else len(args)
        choose_init(args[0], args[1:split], args[split + 1 :])
    elif action == "lineage":
        lineage_seed(args[0] if args else "")
    elif action == "collect":
        collect(*args)
    else:
        raise SystemExit(f"gpu_helper: unknown action {action!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
