"""``audiokit data pack``: a compact, self-contained copy of a manifest's clips (Ogg Opus).

A pack is a folder that can travel where the data cache cannot (a lent GPU machine receives at most
64 MiB of working tree)::

    OUT_DIR/audio/{package}/{stem}-{index}.opus   mono Ogg Opus at the pack's rate
    OUT_DIR/manifest.jsonl                          manifest rows, ``path`` relative to OUT_DIR
    OUT_DIR/PACK.json                               what went in: source, counts, codec, licences

Clips are taken in a seeded random order (or the manifest's) and encoded one by one with ``opusenc``
until the next one would exceed the size budget, so a smaller budget gives a prefix of a larger one.
The pack is built in a temporary folder beside OUT_DIR and renamed onto it only when complete.
"""

from __future__ import annotations

import io as bytes_io
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audiokit import __version__
from audiokit import io as audio_io
from audiokit.data.debs import sha256_file
from audiokit.data.manifest import (
    DEFAULT_SAMPLE_RATE,
    audio_path,
    find_manifest,
    package_totals,
    read_jsonl,
    text_lines,
)
from audiokit.data.paths import data_root
from audiokit.errors import UsageError
from audiokit.folders import check_target, staged_folder
from audiokit.schema import json_number
from audiokit.tools import OPUS_MIN_KBPS, require_tool

CODECS = ("opus",)
PACK_JSON_RESERVE = 64 * 1024  # bytes kept free in the budget for PACK.json
DROPPED_FIELDS = ("source_sha256",)  # provenance kept in the source manifest; saves ~85 bytes a row
MIB = 1 << 20


@dataclass(frozen=True)
class PackSummary:
    """What a pack holds: clip count, seconds of audio and bytes on disk (audio + manifest + PACK.json)."""

    out_dir: Path
    clips: int
    seconds: float
    bytes: int
    source_clips: int


def resolve_manifest(spec: str, root: Path | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """The manifest ``spec`` names: an existing file, or ``{root}/manifests[/sr<rate>]/<spec>.jsonl``."""
    try:
        return find_manifest(spec, root, sample_rate)
    except FileNotFoundError as exc:
        raise UsageError(f"--manifest {exc}; run `audiokit data prepare` or give a path") from None


def read_rows(manifest: Path, root: Path) -> list[dict]:
    """Manifest rows with ``path`` made absolute; a malformed line (no string ``path``, a ``seconds`` that
    is not a finite number >= 0) is a one-line :class:`UsageError`."""
    rows = []
    try:
        lines = text_lines(manifest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            relative = Path(row["path"]).expanduser()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else f"no string 'path' ({exc})"
            raise UsageError(f"{manifest}:{number}: not a manifest line: {problem}") from None
        if "seconds" in row and not 0 <= json_number(row["seconds"]) < math.inf:
            raise UsageError(
                f"{manifest}:{number}: 'seconds' {row['seconds']!r} is not a finite number of seconds >= 0 "
                "(or leave it out)"
            )
        row["path"] = str(audio_path(manifest, relative, root))
        rows.append(row)
    if not rows:
        raise UsageError(f"{manifest}: the manifest holds no clips")
    return rows


def encode_opus(wav: np.ndarray, sample_rate: int, kbps: float, out: Path, opusenc: str) -> None:
    """Encode mono float32 ``wav`` ``(samples,)`` at ``sample_rate`` Hz to Ogg Opus at ``kbps`` (VBR).

    No comment padding and a fixed stream serial, so the same input always gives the same bytes. ``out``
    is written by Python, not opusenc, so that a failed write says why ("No space left on device").
    """
    buffer = bytes_io.BytesIO()
    sf.write(buffer, wav, sample_rate, format="WAV", subtype="FLOAT")
    command = [opusenc, "--quiet", "--bitrate", f"{kbps:g}", "--padding", "0", "--serial", "1", "-", "-"]
    done = subprocess.run(command, input=buffer.getvalue(), capture_output=True)
    if done.returncode != 0:
        reason = " ".join(done.stderr.decode(errors="replace").split())[-300:]
        raise UsageError(f"opusenc failed on {out.name} ({reason})")
    out.write_bytes(done.stdout)


def _encoder_version(opusenc: str) -> str:
    done = subprocess.run([opusenc, "--version"], capture_output=True, text=True)
    return done.stdout.split("\n")[0].strip()


def _packed_name(row: dict, index: int) -> str:
    package = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row.get("package") or "clips"))
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(row["path"]).stem)[:60]
    return f"audio/{package}/{stem}-{index:05d}.opus"


def _package_versions(root: Path) -> dict[str, str]:
    path = root / "manifests" / "packages.jsonl"
    if not path.is_file():
        return {}
    return {row["package"]: row.get("version") for row in read_jsonl(path) if "package" in row}


def _self_sized(info: dict) -> str:
    """PACK.json's text with ``bytes`` = audio + manifest + the size of that very text."""
    info["bytes"] = info["audio_bytes"] + info["manifest_bytes"]
    while True:
        text = json.dumps(info, indent=1, ensure_ascii=False) + "\n"
        total = info["audio_bytes"] + info["manifest_bytes"] + len(text.encode())
        if total == info["bytes"]:
            return text
        info["bytes"] = total


def pack(
    manifest: str,
    out_dir: Path,
    max_mb: float,
    kbps: float = 32.0,
    codec: str = "opus",
    seed: int = 0,
    shuffle: bool = True,
    max_clips: int | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    root: Path | None = None,
    force: bool = False,
    quiet: bool = False,
) -> PackSummary:
    """Encode the clips of ``manifest`` (a path or a prepared manifest's name) into the pack ``out_dir``.

    Args:
        max_mb: budget for the whole folder in MiB (2**20 bytes, the unit of the device limits).
        kbps: Opus bitrate in kbit/s (VBR); ``sample_rate``: rate of the packed audio in Hz.
        seed: order of the clips (a seeded permutation); ``shuffle=False`` keeps the manifest's order.
        max_clips: stop after this many clips even if the budget allows more.
    """
    if codec not in CODECS:
        raise UsageError(f"--codec {codec!r}: choose from {', '.join(CODECS)}")
    if sample_rate not in audio_io.OPUS_RATES:
        rates = ", ".join(map(str, audio_io.OPUS_RATES))
        raise UsageError(f"--sample-rate {sample_rate}: Opus keeps only {rates} Hz")
    if not OPUS_MIN_KBPS <= kbps <= 256:
        raise UsageError(f"--kbps {kbps:g}: Opus takes {OPUS_MIN_KBPS:g} to 256 kbit/s for one channel")
    if max_clips is not None and max_clips < 1:
        raise UsageError(f"--max-clips {max_clips}: give at least 1")
    if not math.isfinite(max_mb):
        raise UsageError(f"--max-mb {max_mb:g}: give a size in MiB, e.g. --max-mb 16")
    budget = int(max_mb * MIB)
    if budget <= PACK_JSON_RESERVE:
        raise UsageError(f"--max-mb {max_mb:g}: too small for even one clip")
    root = (root or data_root()).expanduser()
    source = resolve_manifest(manifest, root, sample_rate)
    rows = read_rows(source, root)
    order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
    opusenc = require_tool("opusenc", "opus-tools")
    out_dir = Path(out_dir)
    check_target(out_dir, [source, *(row["path"] for row in rows)], "PACK.json", "pack", force)
    with staged_folder(out_dir, force=True) as tmp:  # check_target refused what needs -f
        packed, lines, used = [], [], PACK_JSON_RESERVE
        limit = len(order) if max_clips is None else min(max_clips, len(order))
        on_terminal = sys.stderr.isatty()
        bar = tqdm(total=budget, desc="packing", unit="B", unit_scale=True, disable=quiet or not on_terminal)
        for index in order[:limit]:
            row = rows[int(index)]
            wav, _ = audio_io.load(row["path"], sample_rate=sample_rate, channels=1)
            name = _packed_name(row, len(packed))
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            encode_opus(wav[0].numpy(), sample_rate, kbps, target, opusenc)
            new = {k: v for k, v in row.items() if k not in DROPPED_FIELDS}
            new.update(
                path=name,
                sample_rate=sample_rate,
                seconds=round(wav.shape[-1] / sample_rate, 4),
                sha256=sha256_file(target),
            )
            line = json.dumps(new, ensure_ascii=False, separators=(",", ":")) + "\n"
            size = target.stat().st_size + len(line.encode())
            if used + size > budget:
                target.unlink()
                break
            used += size
            bar.update(size)
            packed.append(new)
            lines.append(line)
        bar.close()
        if not packed:
            raise UsageError(f"--max-mb {max_mb:g}: not even the first clip fits")
        (tmp / "manifest.jsonl").write_text("".join(lines), encoding="utf-8")
        audio_bytes = sum((tmp / row["path"]).stat().st_size for row in packed)
        seconds = sum(row["seconds"] for row in packed)
        versions = _package_versions(root)
        info = {
            "format": "audiokit-pack",
            "format_version": 1,
            "source_manifest": str(manifest),
            "source_file": str(source.resolve()),
            "source_sha256": sha256_file(source),
            "source_clips": len(rows),
            "source_hours": round(sum(float(r.get("seconds") or 0.0) for r in rows) / 3600, 4),
            "clips": len(packed),
            "seconds": round(seconds, 3),
            "hours": round(seconds / 3600, 4),
            "audio_bytes": audio_bytes,
            "manifest_bytes": (tmp / "manifest.jsonl").stat().st_size,
            "codec": codec,
            "kbps": kbps,
            "sample_rate": sample_rate,
            "channels": 1,
            "seed": seed,
            "shuffled": shuffle,
            "max_mb": max_mb,
            "max_clips": max_clips,
            "packages": [
                {"package": p["package"], "version": versions.get(p["package"]), **p}
                for p in package_totals(packed)
            ],
            "encoder": _encoder_version(opusenc),
            "audiokit": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        text = _self_sized(info)
        (tmp / "PACK.json").write_text(text, encoding="utf-8")
    return PackSummary(out_dir, len(packed), seconds, info["bytes"], len(rows))
