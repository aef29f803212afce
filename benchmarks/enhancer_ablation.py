"""Ablations of the enhancer: variants of its recipe trained alike and scored in pairs on the same clips.

Each ``--variant NAME:KEY=VALUE[,KEY=VALUE...]`` is the recipe (``recipes/enhance_speech16k.yaml``) with
those overrides; every variant gets the same seed, data, optimiser and number of steps. Each trains
from scratch in ``--runs/NAME`` through ``audiokit train`` (resumable: an unfinished run continues),
then its EMA weights enhance ``--clips`` clips of the fixed noisy validation set offline (every
``--stride``-th from the first; the first 80 are nearly all one voice, docs/training.md session 15), and
every metric is reported with its 95 % CI and the paired difference against the first variant on the
same clips (``vs_<first>``), overall and per mixing SNR of the clips (``per_snr``). Without
``--variant`` it runs the front-end ablation of issue 20: the fixed ERB bands against DiffSTFT and
AdaptiveFilterbank bands (``model.options.band_features``, see :mod:`audiokit.models.enhancer`), where
learnable front ends also report what they learnt.

Usage: ``python benchmarks/enhancer_ablation.py --steps 1500 --clips 200 [--stride 8] [--runs runs/ablation]
[--variant NAME:SETTINGS ...] [--set KEY=VALUE ...] [--out FILE]``; writes
``benchmarks/results/enhancer_frontends.json`` (the default variants) or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from audiokit.data.paths import data_root
from audiokit.evaluation import score_pair
from audiokit.evaluation.stats import Summary, paired_difference, summarize
from audiokit.frontends import AdaptiveFilterbank, DiffSTFT
from audiokit.models.enhancer import BAND_FEATURES, Enhancer
from audiokit.provenance import run_info, write_json
from audiokit.train.tasks.enhance import read_noisy_set

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "enhance_speech16k.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "enhancer_frontends.json"
FRONT_ENDS = [f"{name}:model.options.band_features={name}" for name in BAND_FEATURES]
METRICS = ("pesq", "stoi", "si_sdr")


def train(run_dir: Path, steps: int, overrides: list[str]) -> float:
    """Train (or finish) a variant with ``overrides`` to ``steps``; returns the wall time (s) spent."""
    settings = [f"run.max_steps={steps}", f"eval.every_steps={steps}"]
    command = [sys.executable, "-m", "audiokit", "train", str(RECIPE), "--run-dir", str(run_dir), "-q"]
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        command.append("--resume")
    for setting in [*settings, *overrides]:
        command += ["--set", setting]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def score(model: Enhancer, clips: list) -> list[dict]:
    """Per-clip scores (and the noisy input's) of ``model``'s offline output."""
    rows = []
    for name, pair in clips:
        noisy, clean = pair[0], pair[1]
        with torch.no_grad():
            enhanced = model.enhance(noisy[None])[0]
        rows.append({"file": name, **score_pair(clean, enhanced, model.sample_rate)})
    return rows


def cached_score(run_dir: Path, clips: list) -> list[dict]:
    """:func:`score` of the run's EMA weights, kept in ``run_dir/ablation_scores.json`` for the weights'
    sha256 and the clips' names, so that the variant every ablation pairs against is scored once."""
    cache = run_dir / "ablation_scores.json"
    key = {
        "weights_sha256": json.loads((run_dir / "model.json").read_text())["sha256"],
        "clips": [name for name, _ in clips],
    }
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if {k: saved.get(k) for k in key} == key:  # NaN scores were written as null
            return [{k: math.nan if v is None else v for k, v in row.items()} for row in saved["rows"]]
    rows = score(Enhancer.from_pretrained(run_dir / "model.safetensors"), clips)
    write_json(cache, {**key, "rows": rows})
    return rows


def split_settings(settings: str) -> list[str]:
    """``"a=1,b=[2, 3]"`` -> ``["a=1", "b=[2, 3]"]``: commas inside brackets belong to a list value."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(settings):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(settings[start:i])
            start = i + 1
    parts.append(settings[start:])
    return [part for part in parts if part]


def scores(summary: Summary) -> dict:
    """``{metric: {"mean", "ci95"}}`` of :data:`METRICS`."""
    return {m: {"mean": summary.mean[m], "ci95": summary.ci95[m]} for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per variant")
    parser.add_argument("--clips", type=int, default=200, help="validation clips scored")
    parser.add_argument("--stride", type=int, default=1, help="score every STRIDE-th clip from the first")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation", help="run directories")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE[,KEY=VALUE...] (commas inside [...] stay; default: front ends)",
    )
    parser.add_argument("--set", action="append", default=[], help="extra recipe override (all runs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = read_noisy_set("valid_noisy_16k", 16000, args.clips, 6.0, args.stride)
    snrs = clip_snrs("valid_noisy_16k")
    noisy_rows = [{"file": name, **score_pair(pair[1], pair[0], 16000)} for name, pair in clips]
    result: dict = {"recipe": str(RECIPE.relative_to(ROOT)), "steps": args.steps, "overrides": args.set}
    result["clips"], result["stride"] = len(clips), args.stride
    result["noisy"] = scores(summarize(noisy_rows))
    rows: dict[str, list[dict]] = {}
    variants = [v.partition(":") for v in args.variant or FRONT_ENDS]
    first = variants[0][0]
    for name, _, settings in variants:
        run_dir = args.runs / name
        overrides = [*split_settings(settings), *args.set]
        wall = train(run_dir, args.steps, overrides)
        model = Enhancer.from_pretrained(run_dir / "model.safetensors")
        rows[name] = cached_score(run_dir, clips)
        result[name] = {
            "overrides": overrides,
            "train_wall_s_this_call": round(wall, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "scores": scores(summarize(rows[name])),
            "learnt": learnt_front_end(model, clips),
        }
        if name != first:
            result[name][f"vs_{first}"] = {m: paired_difference(rows[name], rows[first], m) for m in METRICS}
        result[name]["per_snr"] = per_snr(rows, name, first, snrs)
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    result["run"] = run_info()
    write_json(args.out, result)


def clip_snrs(folder: str) -> dict[str, float]:
    """Mixing SNR (dB) of each clip of the fixed noisy set, by name."""
    listing = data_root() / folder / "clips.jsonl"
    rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
    return {row["name"]: float(row["snr_db"]) for row in rows}


def per_snr(rows: dict[str, list[dict]], name: str, first: str, snrs: dict[str, float]) -> dict:
    """``{snr: {"clips", metric scores, "vs_<first>"}}`` of variant ``name``'s rows."""
    table = {}
    for snr in sorted({snrs[row["file"]] for row in rows[name]}):
        mine = [row for row in rows[name] if snrs[row["file"]] == snr]
        entry = {"clips": len(mine), **scores(summarize(mine))}
        if name != first:
            theirs = [row for row in rows[first] if snrs[row["file"]] == snr]
            entry[f"vs_{first}"] = {m: paired_difference(mine, theirs, m) for m in METRICS}
        table[f"{snr:g}"] = entry
    return table


def learnt_front_end(model: Enhancer, clips: list) -> dict:
    """What the learnable front end ended up with: its window length (samples), or the share of the
    validation frames on which the analyser picks each filterbank."""
    frontend = model.band_frontend
    if isinstance(frontend, DiffSTFT):
        return {"win_length_samples": float(frontend.lengths().detach())}
    if not isinstance(frontend, AdaptiveFilterbank):
        return {}
    with torch.no_grad():
        picks = torch.cat([frontend.mixing_weights(pair[0]).argmax(-1).flatten() for _, pair in clips])
    shares = torch.bincount(picks, minlength=len(frontend.banks)).float() / picks.numel()
    return {
        "bank_share": {bank.init: round(float(s), 3) for bank, s in zip(frontend.banks, shares, strict=True)}
    }


if __name__ == "__main__":
    main()
