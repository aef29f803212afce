"""``audiokit data mix``: the fixed noisy validation set (validation speech + validation noise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audiokit import io as audio_io
from audiokit.data.debs import sha256_file
from audiokit.data.manifest import DEFAULT_SAMPLE_RATE, manifest_path, read_manifest, write_jsonl_atomic
from audiokit.data.mixing import loop_excerpt, mix_at_snr, snr_db
from audiokit.errors import UsageError
from audiokit.folders import check_target, staged_folder

DEFAULT_SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0)
MAX_NOISE_DRAWS = 1000  # (nearly) silent excerpts redrawn before the noise is taken for silent


def build_noisy_set(
    out: Path,
    snrs: tuple[float, ...] = DEFAULT_SNRS,
    seed: int = 0,
    root: Path | None = None,
    sample_rate: int = 16000,
    quiet: bool = False,
    force: bool = False,
    clip_list: Path | None = None,
) -> list[dict]:
    """Mix every validation speech clip with a validation noise excerpt; write ``clean/`` and ``noisy/``.

    For clip ``i`` (speech sorted by path) the SNR is ``snrs[i % len(snrs)]`` after a seeded shuffle, and
    the noise clip and start offset are drawn from ``numpy.random.default_rng(seed)``; short noise is
    looped. Both files are 16-bit WAV with the same relative name. Returns the clip list (also written
    to ``out/clips.jsonl``, and to ``clip_list`` when given): names, SNR, noise source, offset and the
    sha256 of both files. The folder is written whole (an existing ``out`` is replaced only with
    ``force``, and only once the new set is complete); ``clip_list`` is refused before anything is
    written when it exists without ``force`` or is one of the inputs (a manifest or a clip).
    """
    if not snrs:
        raise UsageError("--snr: give at least one SNR in dB, e.g. -5,0,5,10,20")
    speech_manifest = manifest_path("valid", "speech", root, sample_rate)
    noise_manifest = manifest_path("valid", "noise", root, sample_rate)
    for path in (speech_manifest, noise_manifest):
        if not path.exists():
            rate = "" if sample_rate == DEFAULT_SAMPLE_RATE else f" --sample-rate {sample_rate}"
            raise UsageError(f"{path}: missing; run `audiokit data prepare --split valid{rate}` first")
    speech, noise = _rows(speech_manifest, root), _rows(noise_manifest, root)
    if not speech or not noise:
        raise UsageError(f"{speech_manifest.parent}: the valid speech or noise manifest is empty")
    rng = np.random.default_rng(seed)
    snr_order = np.resize(np.asarray(snrs, dtype=np.float64), len(speech))
    rng.shuffle(snr_order)
    noise_cache: dict[str, np.ndarray] = {}
    clips = []
    inputs = [speech_manifest, noise_manifest, *(row["path"] for row in [*speech, *noise])]
    check_target(out, inputs, "clips.jsonl", "clean/noisy set", force)
    if clip_list is not None:
        audio_io.prepare_outputs([("--list", clip_list)], force=force, inputs=inputs)
    with staged_folder(out, force=True) as staging:  # check_target refused what needs -f
        bar = tqdm(speech, desc="mixing", unit="clip", disable=quiet or not sys.stderr.isatty())
        for index, row in enumerate(bar):
            clean, rate = audio_io.load(row["path"], sample_rate=sample_rate, channels=1)
            clean = clean.numpy()
            noise_row, offset, excerpt = _draw_noise(
                rng, noise, noise_cache, sample_rate, clean.shape[-1], noise_manifest
            )
            target = float(snr_order[index])
            clean_out, noisy_out = mix_at_snr(clean, excerpt, target)
            name = Path(row["package"]) / _inside(row["path"]).with_suffix(".wav")
            audio_io.save(staging / "clean" / name, clean_out, rate, subtype="PCM_16")
            audio_io.save(staging / "noisy" / name, noisy_out, rate, subtype="PCM_16")
            clips.append(
                {
                    "name": name.as_posix(),
                    "sample_rate": rate,
                    "seconds": round(clean.shape[-1] / rate, 4),
                    "snr_db": target,
                    "speech_package": row["package"],
                    "speech_source": row["source_path"],
                    "noise_package": noise_row["package"],
                    "noise_source": noise_row["source_path"],
                    "noise_offset": offset,
                    "clean_sha256": sha256_file(staging / "clean" / name),
                    "noisy_sha256": sha256_file(staging / "noisy" / name),
                }
            )
        write_jsonl_atomic(staging / "clips.jsonl", clips)
    if clip_list is not None:
        write_jsonl_atomic(clip_list, clips)
    return clips


def _rows(manifest: Path, root: Path | None) -> list[dict]:
    """Rows of a prepared manifest sorted by path; a bad line, a row without the fields a mixture
    records or a clip that is not on disk is a one-line :class:`UsageError` naming the manifest."""
    try:
        rows = read_manifest(manifest, root)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for row in rows:
        missing = [key for key in ("package", "source_path") if key not in row]
        if missing or _inside(row["path"]) is None:
            below = "corpus/{rate}/{split}/{role}/{package}/"
            problem = f"has no {missing[0]!r}" if missing else f"is not a prepared clip (not below {below})"
            raise UsageError(f"{manifest}: the row of {row['path']} {problem}; rerun `audiokit data prepare`")
    gone = [row["path"] for row in rows if not os.path.isfile(row["path"])]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        raise UsageError(f"{manifest}: lists {gone[0]}{more}, not found; rerun `audiokit data prepare`")
    return sorted(rows, key=lambda row: row["path"])


def _draw_noise(
    rng: np.random.Generator,
    noise: list[dict],
    cache: dict[str, np.ndarray],
    sample_rate: int,
    length: int,
    manifest: Path,
) -> tuple[dict, int, np.ndarray]:
    """Pick a noise clip and offset; redraw while the excerpt is (nearly) silent (below -60 dBFS), at
    most :data:`MAX_NOISE_DRAWS` times (then the noise of ``manifest`` is a :class:`UsageError`)."""
    for _ in range(MAX_NOISE_DRAWS):
        row = noise[int(rng.integers(len(noise)))]
        if row["path"] not in cache:
            cache[row["path"]] = audio_io.load(row["path"], sample_rate, channels=1)[0].numpy()
        offset = int(rng.integers(cache[row["path"]].shape[-1]))
        excerpt = loop_excerpt(cache[row["path"]], length, offset)
        if np.mean(excerpt.astype(np.float64) ** 2) > 1e-6:
            return row, offset, excerpt
    raise UsageError(
        f"{manifest}: no noise excerpt above -60 dBFS in {MAX_NOISE_DRAWS} draws: its clips are nearly silent"
    )


def _inside(path: str) -> Path | None:
    """Path of a corpus clip below ``corpus/{rate}/{split}/{role}/{package}/`` (``None``: not below it)."""
    parts = Path(path).parts
    if "corpus" not in parts:
        return None
    corpus = len(parts) - 1 - parts[::-1].index("corpus")
    return Path(*parts[corpus + 5 :]) if len(parts) > corpus + 5 else None


def measured_snr_db(clean_path: Path, noisy_path: Path) -> float:
    """SNR in dB of a written pair, ``noise = noisy - clean``."""
    clean = audio_io.load(clean_path)[0].numpy()
    noisy = audio_io.load(noisy_path)[0].numpy()
    return snr_db(clean, noisy - clean)
