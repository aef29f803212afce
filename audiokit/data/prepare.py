"""``audiokit data prepare``: fetch allowlisted packages, decode, trim, resample, write manifests.

Cache layout below the data root (``$AUDIOKIT_DATA``):

- ``debs/``: downloaded packages; ``packages/{name}.json``: version, file name and sha256 of each one used
- ``extracted/{name}/``: unpacked packages (archive members below ``{archive}.d/``)
- ``corpus/{rate}/{split}/{role}/{name}/...flac``: trimmed, resampled, mono 16-bit FLAC clips
- ``state/{rate}/{unit}.json``: done marker of one source rule, holding its manifest rows
  (``{unit}.partial.jsonl`` logs finished clips while the rule runs)
- ``manifests/{split}_{role}.jsonl``: assembled from the done markers (see :mod:`audiokit.data.manifest`)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audiokit import io as audio_io
from audiokit.data.archives import extract_members, list_members
from audiokit.data.debs import extract_package, fetch_package, package_version, sha256_file
from audiokit.data.decode import decode, resample
from audiokit.data.manifest import (
    manifest_dir,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from audiokit.data.paths import data_root
from audiokit.data.sources import ROLES, SOURCES, SPLITS, Source, select
from audiokit.data.vad import trim_silence
from audiokit.dsp import estimate_bandwidth
from audiokit.errors import AudioFormatError, UsageError
from audiokit.progress import progress

NARROWBAND_RATE = 8000  # speech_nb clips are stored at this rate (their content stops below 4 kHz)
MIN_SECONDS = 0.1  # clips shorter than this after trimming are dropped
SPEECH_MAX_GAP_MS = 500.0  # inner pauses in speech are shortened to this


@dataclass
class PrepareSummary:
    """What one run did: units processed/skipped, clips written, duplicates and silent clips dropped."""

    units_done: int = 0
    units_skipped: int = 0
    clips: int = 0
    duplicates: int = 0
    silent: int = 0
    failed: list[str] = field(default_factory=list)


def unit_id(source: Source) -> str:
    """Stable name of a source rule; it changes when the rule changes, so edited rules are redone."""
    digest = hashlib.sha1(repr(source).encode()).hexdigest()[:8]
    return f"{source.split}_{source.role}_{source.package}_{digest}"


def stored_rate(role: str, sample_rate: int) -> int:
    """Sample rate (Hz) clips of ``role`` are stored at."""
    return min(sample_rate, NARROWBAND_RATE) if role == "speech_nb" else sample_rate


def resolve_in_tree(tree: Path, relative: str) -> Path | None:
    """Real path of ``tree/relative`` following symlinks, absolute ones taken relative to ``tree``.

    Returns None for dangling links or links leaving the package.
    """
    path = tree / relative
    for _ in range(40):
        if not path.is_symlink():
            break
        target = os.readlink(path)
        path = tree / target.lstrip("/") if target.startswith("/") else path.parent / target
    real = Path(os.path.realpath(path))
    tree_real = Path(os.path.realpath(tree))
    if not real.is_file() or tree_real not in real.parents:
        return None
    return real


def _candidates(source: Source, tree: Path) -> list[tuple[str, Path]]:
    """(path inside the package, real file) for every selected file, sorted by path."""
    if source.archive is None:
        found = []
        for folder, _, files in os.walk(tree):
            for name in files:
                relative = (Path(folder) / name).relative_to(tree).as_posix()
                if source.match(relative) is not None:
                    real = resolve_in_tree(tree, relative)
                    if real is not None:
                        found.append((relative, real))
        return sorted(found)
    archive = tree / source.archive
    if not archive.is_file():
        raise AudioFormatError(archive, f"archive missing from package {source.package}")
    members = sorted(name for name in list_members(archive) if source.match(name) is not None)
    written = extract_members(archive, members, tree / (source.archive + ".d"))
    return [(f"{source.archive}/{name}", written[name]) for name in members]


def _decode_mono(path: Path) -> tuple[np.ndarray, int, int, float]:
    """(mono wav ``(1, T)``, native rate, native channels, bandwidth Hz) of a file."""
    wav, rate = decode(path)
    bandwidth = estimate_bandwidth(wav, rate)
    return wav.mean(axis=0, keepdims=True), rate, wav.shape[0], bandwidth


def _clip_names(clips: list[list[tuple[str, Path]]]) -> list[str]:
    """Where each clip goes inside its package's corpus folder: its file's path (``{folder}/mix`` for
    summed stems) with ``.flac`` for the suffix, or after it where two files differ only in their suffix
    (supertux ``grow.ogg`` and ``grow.wav``), so that each gets a FLAC of its own."""
    paths = [Path(files[0][0] if len(files) == 1 else Path(files[0][0]).parent / "mix") for files in clips]
    stems = Counter(path.with_suffix("") for path in paths)
    return [
        f"{path.as_posix()}.flac" if stems[path.with_suffix("")] > 1 else path.with_suffix(".flac").as_posix()
        for path in paths
    ]


def _clip(
    source: Source, files: list[tuple[str, Path]], name: str, root: Path, sample_rate: int
) -> tuple[dict, bool] | None:
    """Decode (summing stems), trim, resample and write one clip as ``name`` (see :func:`_clip_names`);
    returns (row, kept) or None if silent."""
    parts = [_decode_mono(real) for _, real in files]
    native_rate = parts[0][1]
    length = max(part[0].shape[-1] for part in parts)
    wav = np.zeros((1, length), dtype=np.float32)
    for part, rate, _, _ in parts:
        if rate != native_rate:
            part = resample(part, rate, native_rate)[:, :length]
        wav[:, : part.shape[-1]] += part
    if source.trim:
        max_gap = SPEECH_MAX_GAP_MS if source.role.startswith("speech") else None
        wav = trim_silence(wav, native_rate, max_gap_ms=max_gap)
    if wav.shape[-1] < MIN_SECONDS * native_rate:
        return None
    rate = stored_rate(source.role, sample_rate)
    wav = np.clip(resample(wav, native_rate, rate), -1.0, 32767 / 32768)
    out = Path("corpus") / str(sample_rate) / source.split / source.role / source.package / name
    audio_io.save(root / out, wav, rate, subtype="PCM_16")
    row = {
        "path": out.as_posix(),
        "sample_rate": rate,
        "seconds": round(wav.shape[-1] / rate, 4),
        "role": source.role,
        "split": source.split,
        "language": None,
        "group": None,
        "package": source.package,
        "source_path": [name for name, _ in files] if len(files) > 1 else files[0][0],
        "licence": source.licence,
        "native_sample_rate": native_rate,
        "native_channels": max(part[2] for part in parts),
        "bandwidth_hz": round(min(max(part[3] for part in parts), rate / 2), 1),
        "sha256": sha256_file(root / out),
        "source_sha256": _files_sha256([real for _, real in files]),
    }
    return row, True


def _files_sha256(paths: list[Path]) -> str:
    if len(paths) == 1:
        return sha256_file(paths[0])
    return hashlib.sha256("".join(sha256_file(path) for path in paths).encode()).hexdigest()


def _process_unit(
    source: Source, tree: Path, root: Path, sample_rate: int, quiet: bool, summary: PrepareSummary
) -> list[dict]:
    state = root / "state" / str(sample_rate)
    partial = state / f"{unit_id(source)}.partial.jsonl"
    rows: dict[str, dict] = {}
    if partial.exists():
        for row in read_jsonl(partial, cut_end=True):  # a last line a killed run cut short: left out
            if (root / row["path"]).exists():
                rows[_key(row["source_path"])] = row
        # rewritten without a last line cut short (a killed run's), which the next append would extend
        write_jsonl_atomic(partial, rows.values())
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    seen_real: set[Path] = set()
    # Real files before symlinks, so a symlinked copy is dropped rather than its target.
    candidates = sorted(_candidates(source, tree), key=lambda item: ((tree / item[0]).is_symlink(), item[0]))
    for relative, real in candidates:
        if real in seen_real:
            summary.duplicates += 1
            continue
        seen_real.add(real)
        key = _fields(source, relative)["group"] if source.mix_stems_by_group else relative
        groups[key].append((relative, real))
    seen_content: set[str] = {row["source_sha256"] for row in rows.values()}
    state.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as log:
        clips = list(groups.values())
        for files, name in tqdm(
            list(zip(clips, _clip_names(clips), strict=True)),
            desc=f"{source.package} {source.split}/{source.role}",
            unit="clip",
            leave=False,
            disable=quiet or not sys.stderr.isatty(),  # per clip: a bar on a terminal only
        ):
            key = _key([name for name, _ in files] if len(files) > 1 else files[0][0])
            if key in rows:
                continue
            content = _files_sha256([real for _, real in files])
            if content in seen_content:
                summary.duplicates += 1
                continue
            seen_content.add(content)
            try:
                made = _clip(source, files, name, root, sample_rate)
            except AudioFormatError as error:
                summary.failed.append(str(error))
                continue
            if made is None:
                summary.silent += 1
                continue
            row = made[0]
            row.update(_fields(source, files[0][0]))
            if source.pair_with is not None:
                corpus, rate, split, _, _, *inside = Path(row["path"]).parts
                row["pair"] = Path(corpus, rate, split, "speech", source.pair_with, *inside).as_posix()
            rows[key] = row
            summary.clips += 1
            log.write(json.dumps(row, ensure_ascii=False) + "\n")
            log.flush()
    return sorted(rows.values(), key=lambda row: row["path"])


def _fields(source: Source, relative: str) -> dict[str, str | None]:
    """Language and group of a selected path (inside the package, or ``archive/member``)."""
    if source.archive is not None:
        relative = relative[len(source.archive) + 1 :]
    fields = source.match(relative)
    assert fields is not None, relative
    return fields


def _key(source_path: str | list[str]) -> str:
    return source_path if isinstance(source_path, str) else "|".join(source_path)


def _record_package(root: Path, package: str, deb: Path, deb_sha256: str) -> None:
    record = root / "packages" / f"{package}.json"
    if record.exists() and json.loads(record.read_text())["file"] == deb.name:
        return
    write_json_atomic(
        record,
        {
            "package": package,
            "version": package_version(deb),
            "file": deb.name,
            "bytes": deb.stat().st_size,
            "sha256": deb_sha256,
            "copyright": f"usr/share/doc/{package}/copyright",
        },
    )


def prepare(
    roles: list[str] | None = None,
    splits: list[str] | None = None,
    sample_rate: int = 16000,
    root: Path | None = None,
    deb_dir: Path | None = None,
    quiet: bool = False,
    after_unit: Callable[[Source], None] | None = None,
    packages: list[str] | None = None,
) -> PrepareSummary:
    """Prepare the corpus for the given roles and splits (all by default) and rebuild the manifests.

    Work is done per source rule; a rule whose done marker exists is skipped, an interrupted one resumes
    from its partial log. ``deb_dir`` takes .debs from a local folder instead of ``apt-get download``.
    ``after_unit`` is called after each completed rule (used by tests to interrupt a run);
    ``packages`` restricts the run to those packages.
    """
    roles = list(roles or ROLES)
    splits = list(splits or SPLITS)
    for value, allowed, what in ((roles, ROLES, "role"), (splits, SPLITS, "split")):
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise UsageError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if sample_rate < 8000:
        raise UsageError(f"--sample-rate {sample_rate} is too low; use 8000 Hz or more")
    root = root or data_root()
    summary = PrepareSummary()
    sources = select(roles, splits)
    if packages is not None:
        unknown = sorted(set(packages) - {source.package for source in sources})
        if unknown:
            raise UsageError(
                f"package {', '.join(unknown)} is not in the allowlist for these roles and splits"
            )
        sources = [source for source in sources if source.package in packages]
    with _exclusive(root):
        _prepare_sources(sources, sample_rate, root, deb_dir, quiet, after_unit, summary)
        write_manifests(root, sample_rate)
    return summary


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold the data directory's lock: two prepares unpacking the same package into one folder would
    break each other's work."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".prepare.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{root}: another `audiokit data prepare` is working on this data directory; "
                "wait for it to finish (reruns skip what it has done)"
            ) from None
        yield


def _prepare_sources(
    sources: list[Source],
    sample_rate: int,
    root: Path,
    deb_dir: Path | None,
    quiet: bool,
    after_unit: Callable[[Source], None] | None,
    summary: PrepareSummary,
) -> None:
    """Fetch, unpack and process every rule of ``sources`` that has no done marker yet."""
    state = root / "state" / str(sample_rate)
    for package in progress(
        list(dict.fromkeys(source.package for source in sources)), "packages", quiet=quiet, label=str
    ):
        units = [source for source in sources if source.package == package]
        pending = [source for source in units if not _done(state / f"{unit_id(source)}.json", root)]
        summary.units_skipped += len(units) - len(pending)
        if not pending:
            continue
        deb = fetch_package(package, root / "debs", deb_dir)
        deb_sha256 = sha256_file(deb)  # once: 0ad-data's 1.4 GB take seconds
        # unpacked first: a corrupt .deb is not recorded
        tree = extract_package(deb, root / "extracted" / package, deb_sha256)
        _record_package(root, package, deb, deb_sha256)
        for source in pending:
            rows = _process_unit(source, tree, root, sample_rate, quiet, summary)
            write_json_atomic(
                state / f"{unit_id(source)}.json",
                {"unit": unit_id(source), "package": package, "deb_sha256": deb_sha256, "rows": rows},
            )
            (state / f"{unit_id(source)}.partial.jsonl").unlink(missing_ok=True)
            summary.units_done += 1
            if after_unit is not None:
                after_unit(source)


def _done(marker: Path, root: Path) -> bool:
    """Whether a rule is done: its ``marker`` exists and every clip it lists is still below ``root`` (a
    deleted clip makes the rule run again rather than stay in the manifests)."""
    if not marker.exists():
        return False
    rows = json.loads(marker.read_text(encoding="utf-8"))["rows"]
    return all((root / row["path"]).is_file() for row in rows)


def write_manifests(root: Path, sample_rate: int) -> dict[tuple[str, str], list[dict]]:
    """Assemble ``{split}_{role}.jsonl`` from every done marker at ``sample_rate``.

    A clip whose source content appears in several rules is kept once: validation wins over training,
    then allowlist order. Also writes ``packages.jsonl`` (name, version, sha256 of every package used).
    """
    state = root / "state" / str(sample_rate)
    order = {unit_id(source): index for index, source in enumerate(SOURCES)}
    markers = []
    for path in state.glob("*.json"):
        marker = json.loads(path.read_text(encoding="utf-8"))
        if marker["unit"] in order:
            markers.append(marker)
    markers.sort(
        key=lambda marker: (
            bool(marker["rows"]) and marker["rows"][0]["split"] != "valid",
            order[marker["unit"]],
        )
    )
    tables: dict[tuple[str, str], list[dict]] = defaultdict(list)
    seen: set[str] = set()
    used_packages: set[str] = set()
    for marker in markers:
        for row in marker["rows"]:
            if row["source_sha256"] in seen:
                continue
            seen.add(row["source_sha256"])
            tables[(row["split"], row["role"])].append(row)
            used_packages.add(row["package"])
    valid_speech = {row["path"] for row in tables.get(("valid", "speech"), [])}
    folder = manifest_dir(root, sample_rate)
    for (split, role), rows in tables.items():
        for row in rows:
            if row.get("pair") is not None and row["pair"] not in valid_speech:
                row["pair"] = None
        write_jsonl_atomic(folder / f"{split}_{role}.jsonl", sorted(rows, key=lambda row: row["path"]))
    records = [json.loads((root / "packages" / f"{name}.json").read_text()) for name in sorted(used_packages)]
    write_jsonl_atomic(folder / "packages.jsonl", records)
    return dict(tables)


def hours_table(root: Path | None = None, sample_rate: int = 16000) -> dict[str, dict[str, float]]:
    """Hours of audio per ``split -> role`` in the prepared manifests (not in others kept beside them)."""
    folder = manifest_dir(root or data_root(), sample_rate)
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for path in sorted(folder.glob("*_*.jsonl")):
        split, role = path.stem.split("_", 1)
        if split in SPLITS and role in ROLES:
            table[split][role] = round(sum(row["seconds"] for row in read_jsonl(path)) / 3600, 3)
    return dict(table)
