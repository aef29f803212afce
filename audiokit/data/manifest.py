"""JSONL manifests of prepared clips: atomic writing, reading, and where they live."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from audiokit.data.paths import data_root
from audiokit.io import atomic_path

DEFAULT_SAMPLE_RATE = 16000


def manifest_dir(root: Path | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """``root/manifests`` for the default 16 kHz corpus, ``root/manifests/sr{rate}`` for other rates."""
    base = (root or data_root()) / "manifests"
    return base if sample_rate == DEFAULT_SAMPLE_RATE else base / f"sr{sample_rate}"


def manifest_path(
    split: str, role: str, root: Path | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> Path:
    """Path of the ``{split}_{role}.jsonl`` manifest."""
    return manifest_dir(root, sample_rate) / f"{split}_{role}.jsonl"


def find_manifest(spec: str | Path, root: Path | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """The manifest ``spec`` names: an existing path, else the prepared manifest ``<spec>.jsonl`` in
    :func:`manifest_dir` (per-rate folder included). Raises :class:`FileNotFoundError` naming both."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name = str(spec) if str(spec).endswith(".jsonl") else f"{spec}.jsonl"
    named = manifest_dir(root, sample_rate) / name
    if named.is_file():
        return named
    raise FileNotFoundError(f"{str(spec)!r} is neither an existing path nor a prepared manifest ({named})")


def write_json_atomic(path: Path, data: object) -> None:
    """Write one JSON document atomically (temp file in the same folder + os.replace)."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def text_lines(path: Path) -> list[str]:
    """The lines of the UTF-8 text file ``path`` (a byte-order mark, as some editors write, skipped);
    :class:`ValueError` naming it when it is not text (an audio file given as a manifest)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a JSONL manifest (not UTF-8 text)") from None
    # only newlines end a line: JSON written with ensure_ascii=False keeps U+2028 and the like in strings
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_jsonl(path: Path, cut_end: bool = False) -> list[dict]:
    """All rows of a JSONL file (blank lines skipped). A line that is not JSON raises :class:`ValueError`
    naming ``file:line``; with ``cut_end``, a last line cut short (its writer killed while appending it)
    is left out instead."""
    lines = text_lines(path)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            if cut_end and number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
    return rows


def package_totals(rows: Iterable[dict], unnamed: str = "unknown") -> list[dict]:
    """Per Debian package of manifest ``rows``, sorted by name: ``package``, ``clips``, ``seconds``
    (rounded to ms) and the ``licences`` the rows record, in order of appearance. Rows without a
    package count under ``unnamed``."""
    table: dict[str, dict] = {}
    for row in rows:
        name = row.get("package") or unnamed
        entry = table.setdefault(name, {"package": name, "clips": 0, "seconds": 0.0, "licences": []})
        licence = row.get("licence")
        if licence and licence not in entry["licences"]:
            entry["licences"].append(licence)
        entry["clips"] += 1
        entry["seconds"] += float(row.get("seconds") or 0.0)
    for entry in table.values():
        entry["seconds"] = round(entry["seconds"], 3)
    return sorted(table.values(), key=lambda e: e["package"])


def audio_path(manifest: Path, audio: str | Path, root: Path | None = None) -> Path:
    """Where a manifest's ``path`` entry points.

    Absolute paths stay. Prepared manifests store paths relative to the data root (the folder holding
    ``manifests/``); packs (``audiokit data pack``) and hand-written ones store them relative to the
    manifest itself (``root``: the data root, default :func:`data_root`). The first candidate that
    exists wins.
    """
    audio = Path(audio).expanduser()
    if audio.is_absolute():
        return audio
    folder = manifest.resolve().parent
    while folder.name != "manifests" and folder != folder.parent:
        folder = folder.parent
    candidates = [manifest.parent / audio, (root or data_root()) / audio]
    if folder.name == "manifests":
        candidates.insert(0, folder.parent / audio)
    return next((c for c in candidates if c.exists()), candidates[0])


def read_manifest(path: Path, root: Path | None = None) -> list[dict]:
    """Rows of a manifest, ``path`` and ``pair`` made absolute (relative to ``root`` when given, else
    resolved by :func:`audio_path`). A line that is not a JSON object with a string ``path`` (and a
    ``pair``, if any, that is a string or null) raises :class:`ValueError` naming ``file:line``."""
    rows = []
    for number, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                raise ValueError("no string 'path'")
            if not isinstance(row.get("pair"), str | None):
                raise ValueError(f"'pair' {row['pair']!r} is not a path (a string) or null")
        except ValueError as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ValueError(f"{path}:{number}: not a manifest line: {problem}") from None
        for key in ("path", "pair"):
            if row.get(key):
                row[key] = str(root / row[key] if root is not None else audio_path(path, row[key]))
        rows.append(row)
    return rows
