"""What an audio file holds (header facts, peak and RMS level, estimated bandwidth), what an ``.akc``
file holds (model, weights, bitrate, duration, the encoded input's rate) or what a model's ``.safetensors``
weights are (family, config, step, size, rate, latency): ``audiokit info``."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

from audiokit import io
from audiokit.bitstream import AkcReader
from audiokit.dsp import BandwidthEstimator
from audiokit.errors import ModelError, UsageError
from audiokit.io import RawFormat
from audiokit.models.base import AudioModel


def describe_akc(path: Path) -> dict:
    """What an ``.akc`` file holds: bitstream version, model and weights hash, channels, codebooks,
    nominal and actual bitrate (kbps), duration, the coded rate and length, and the encoded input's
    own rate and length (``original_*``; the coded ones for version-1 files), and the id of the
    entropy-coding model (version 3; else None). Reads the whole file: every chunk's CRC is checked
    (:meth:`AkcReader.verify`), so a damaged file is an error here, not only once decoded."""
    with AkcReader(path) as reader:
        h = reader.header
        reader.verify()
    size = path.stat().st_size
    seconds = h.num_samples / h.sample_rate
    return {
        "path": str(path),
        "format": "akc",
        "version": h.version,
        "model": h.model_name,
        "weights_sha256": h.weights_hash,
        "channels": h.channels,
        "codebooks": h.num_codebooks,
        "bitrate_kbps": round(h.bitrate / 1000, 3),
        "actual_kbps": round(size * 8 / seconds / 1000, 3) if seconds else None,
        "bytes": size,
        "duration_s": round(seconds, 6),
        "sample_rate": h.sample_rate,
        "samples": h.num_samples,
        "original_sample_rate": h.original_rate,
        "original_samples": h.original_samples,
        "entropy_model_id": h.entropy_model if h.version >= 3 else None,
    }


def describe_weights(path: Path) -> dict:
    """What a model's ``.safetensors`` weights (with their ``.json``) are, loaded and checked as
    ``from_pretrained`` does: family, name, the sha256 ``.akc`` headers name them by, training step (None
    where not recorded, e.g. averaged weights), parameters, file bytes, sample rate (Hz), channels, hop
    (samples), algorithmic latency (samples and ms), the config; for a codec its codebooks and bitrates
    (kbps)."""
    model = AudioModel.from_pretrained(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    row = {
        "path": str(path),
        "format": "weights",
        "family": model.family,
        "model": model.name,
        "weights_sha256": meta.get("weights_sha256") or meta["sha256"],
        "step": meta.get("step"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": path.stat().st_size,
        "sample_rate": model.sample_rate,
        "channels": model.channels,
        "hop_length": model.hop_length,
        "latency_samples": model.algorithmic_latency,
        "latency_ms": round(model.algorithmic_latency / model.sample_rate * 1000, 3),
        "config": meta.get("config"),
    }
    if model.family == "codec":
        row["codebooks"] = model.num_codebooks
        row["codebook_size"] = model.codebook_size
        row["bitrates_kbps"] = [round(b / 1000, 3) for b in model.bitrates]
    return row


def describe_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file of this project: a model's weights (:func:`describe_weights`), a learned
    entropy-coding prior (``<weights>.entropy.safetensors``, ``--entropy``: which codes it models) or a
    shard of a packed training state (``audiokit checkpoint pack``: its step, and how to unpack it)."""
    try:
        with safe_open(str(path), "pt") as tensors:
            meta = tensors.metadata() or {}
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types)
        raise ModelError(f"{path}: not a readable .safetensors file ({' '.join(str(exc).split())})") from None
    file = {"path": str(path), "bytes": path.stat().st_size}
    if meta.get("format") == "audiokit-entropy-prior":
        model_id = meta.get("model_id", "")
        return file | {
            "format": "entropy-prior",
            "model": meta.get("model"),
            "weights_sha256": meta.get("weights_sha256"),
            "entropy_model_id": int(model_id) if model_id.isdigit() else None,
            "trained_on": meta.get("trained_on"),
        }
    state = path.with_name("state.json")
    if re.fullmatch(r"state-\d+\.safetensors", path.name) and state.is_file():
        record = json.loads(state.read_text())
        if record.get("format") == "audiokit-train-state":
            shards = {"step": record.get("step"), "shards": record.get("shards"), "folder": str(path.parent)}
            return file | {"format": "train-state"} | shards
    return describe_weights(path)


def describe_checkpoint(path: Path) -> dict:
    """A training checkpoint (``audiokit train``'s ``checkpoints/*.pt``): its step, task and model config
    (the run directory: two folders up)."""
    from audiokit.train.checkpoint import load_training_state

    state = load_training_state(path)  # no pickle code is run
    recipe = state.get("recipe")
    model = recipe.get("model") if isinstance(recipe, dict) else None
    if not (
        isinstance(model, dict) and isinstance(recipe.get("task"), str) and isinstance(state.get("step"), int)
    ):
        raise UsageError(
            f"{path}: not an audiokit training checkpoint (no recipe's task, model and step in it)"
        )
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "format": "checkpoint",
        "step": state["step"],
        "task": recipe["task"],
        "model": model.get("config"),
        "run_dir": str(path.parent.parent),
    }


def describe(path: Path, raw: RawFormat | None = None) -> dict:
    """Rate (Hz), channels, samples, duration (s), codec, peak/RMS (dBFS, None for silence), estimated
    bandwidth (Hz) and how many of the samples (per channel, as ``samples``) hold a NaN or an infinity
    in any channel (``nonfinite_samples``; level and bandwidth are of the rest, the bad values counted
    as 0) of ``path``, read in constant memory (``raw``: read it as headerless PCM); an ``.akc`` file is
    described by :func:`describe_akc`, as is a file named ``.akc`` whose magic is damaged (its
    :class:`~audiokit.errors.BitstreamError` names the byte, as ``audiokit decode`` does); a
    ``.safetensors`` file by :func:`describe_safetensors`, a ``.pt`` one by :func:`describe_checkpoint`."""
    if raw is None and (io.is_akc(path) or (path.suffix.lower() == ".akc" and path.is_file())):
        return describe_akc(path)
    if raw is None and path.suffix.lower() == ".safetensors":
        return describe_safetensors(path)
    if raw is None and path.suffix.lower() == ".pt" and zipfile.is_zipfile(path):  # torch.save's format
        return describe_checkpoint(path)
    header = io.info(path, raw)
    estimator = BandwidthEstimator(header.sample_rate)
    peak, energy, count, nonfinite = 0.0, 0.0, 0, 0
    for block in io.iter_blocks(path, raw=raw, allow_nonfinite=True, allow_loud=True):
        bad = ~torch.isfinite(block)
        if bad.any():
            nonfinite += int(bad.any(dim=0).sum())
            block = block.masked_fill(bad, 0.0)
        peak = max(peak, float(block.abs().max()))
        energy += float(block.double().square().sum())
        count += block.numel()
        estimator.update(block)
    rms = math.sqrt(energy / count)
    return {
        "path": str(path),
        "sample_rate": header.sample_rate,
        "channels": header.channels,
        "samples": count // header.channels,
        "duration_s": round(count / header.channels / header.sample_rate, 6),
        "codec": f"{header.format}/{header.subtype}",
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
        "rms_dbfs": round(20 * math.log10(rms), 2) if rms > 0 else None,
        "bandwidth_hz": round(estimator.result(), 1),
        "nonfinite_samples": nonfinite,
    }
