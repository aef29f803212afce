"""The weights archive: every shipped version of every model's weights (codec, enhancer...) stays
addressable by its sha256 (``audiokit/weights/ARCHIVE.json``, plus the archive
``$AUDIOKIT_WEIGHTS_ARCHIVE`` names) and by ``name@version``: which file holds it, whether it is
installed, and for a codec which installed version decodes the files an older one wrote
(docs/bitstream.md, "Weights across upgrades")."""

from __future__ import annotations

import json
import os
from pathlib import Path

from audiokit.errors import ModelError
from audiokit.models.base import WEIGHTS_DIR

ARCHIVE_ENV = "AUDIOKIT_WEIGHTS_ARCHIVE"
"""Environment variable naming one more weights archive (JSON like ``audiokit/weights/ARCHIVE.json``)."""


def archive_entries() -> dict[str, dict]:
    """Every archived shipped version by weights sha256: ``model``, ``version``, ``file`` (resolved to
    an absolute ``path`` beside its archive), ``source`` and ``commit`` (where git holds the file)."""
    paths = [WEIGHTS_DIR / "ARCHIVE.json"]
    if os.environ.get(ARCHIVE_ENV):
        paths.append(Path(os.environ[ARCHIVE_ENV]))
    entries: dict[str, dict] = {}
    for path in paths:
        try:
            weights = json.loads(path.read_text())["weights"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: not a readable weights archive ({exc})") from None
        for sha256, entry in weights.items():
            entries[sha256] = {**entry, "path": path.parent / entry["file"]}
    return entries


def model_version(model_name: str, weights_hash: str) -> str | None:
    """``name@version`` of archived shipped weights, or None for weights that were never shipped."""
    entry = archive_entries().get(weights_hash)
    if entry is None or entry["model"] != model_name:
        return None
    return f"{model_name}@{entry['version']}"


def archived_version(spec: str) -> str | None:
    """The weights sha256 of ``spec`` when it is ``name@version``, an archived shipped version of
    ``name`` (installed or not); else None."""
    name, _, version = spec.rpartition("@")
    for sha256, entry in archive_entries().items():
        if entry["model"] == name and str(entry["version"]) == version:
            return sha256
    return None


def versioned_weights(spec: str) -> Path:
    """The weights file of ``name@version`` (an archived shipped version of ``name``)."""
    name, _, version = spec.rpartition("@")
    sha256 = archived_version(spec)
    if sha256 is None:
        raise ModelError(f"{spec}: no shipped version {version!r} of {name!r} in the weights archive")
    return weights_for(name, sha256)


def weights_for(model_name: str, weights_hash: str) -> Path:
    """The ``.safetensors`` file of ``model_name``'s weights whose sha256 is ``weights_hash`` (an archived
    shipped version); a one-line :class:`ModelError` saying how to get them when they are not here."""
    entry = archive_entry(model_name, weights_hash)
    path = entry["path"]
    if not _installed(entry):
        raise ModelError(
            f"{model_name}@{entry['version']} weights sha256 {weights_hash} are not installed ({path} "
            f"missing); get them and their .json with `git show {entry['commit']}:{entry['source']}` "
            f"(and the .json beside it) into {path.parent}"
        )
    return path


def decoding_weights_for(model_name: str, weights_hash: str) -> Path:
    """The weights that decode files written by ``model_name``'s weights ``weights_hash``: those weights
    when installed, else the newest installed version that writes the same codes (the archive's
    ``codes``: a later version whose decoder alone trained on), else :func:`weights_for`'s error."""
    entry = archive_entry(model_name, weights_hash)
    if not _installed(entry) and entry.get("codes"):
        codes, entries = entry["codes"], archive_entries().values()
        same = [e for e in entries if e["model"] == model_name and e.get("codes") == codes and _installed(e)]
        if same:
            return max(same, key=lambda e: e["version"])["path"]
    return weights_for(model_name, weights_hash)


def decoding_version(model_name: str, weights_hash: str) -> str | None:
    """``name@version`` of the installed weights that decode files written by ``weights_hash``, or None
    when there are none (never shipped, or not installed)."""
    try:
        path = decoding_weights_for(model_name, weights_hash).resolve()
    except ModelError:
        return None
    entry = next(e for e in archive_entries().values() if e["path"].resolve() == path)
    return f"{model_name}@{entry['version']}"


def archive_entry(model_name: str, weights_hash: str) -> dict:
    """The archive's entry of ``model_name``'s weights ``weights_hash``; a one-line :class:`ModelError`
    when they are not a shipped version."""
    entry = archive_entries().get(weights_hash)
    if entry is None or entry["model"] != model_name:
        raise ModelError(
            f"{model_name} weights sha256 {weights_hash} are not a shipped version (see "
            "audiokit/weights/ARCHIVE.json); pass --model with the weights that encoded the file"
        )
    return entry


def _installed(entry: dict) -> bool:
    return entry["path"].is_file() and entry["path"].with_suffix(".json").is_file()
