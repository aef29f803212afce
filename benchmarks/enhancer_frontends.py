"""Front-end ablation of the enhancer: fixed ERB bands against DiffSTFT and AdaptiveFilterbank bands.

The same recipe (``recipes/enhance_speech16k.yaml``), seed, data, optimiser and number of steps for
each ``model.options.band_features`` (``erb``, ``diffstft``, ``adaptive``; see
:mod:`audiokit.models.enhancer`); only the front end that computes the band log powers differs. Each
run trains from scratch in ``--runs/<name>`` through ``audiokit train`` (resumable: an unfinished run
continues), then its EMA weights enhance the first ``--clips`` clips of the fixed noisy validation set
offline, and every metric is reported with its 95 % CI and, per front end, the paired difference
against ``erb`` on the same clips.

Usage: ``python benchmarks/enhancer_frontends.py --steps 1500 --clips 200 [--runs runs/ablation]
[--set KEY=VALUE ...]``; writes ``benchmarks/results/enhancer_frontends.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from audiokit.evaluation import score_pair
from audiokit.evaluation.stats import Summary, paired_difference, summarize
from audiokit.frontends import AdaptiveFilterbank, DiffSTFT
from audiokit.models.enhancer import BAND_FEATURES, Enhancer
from audiokit.provenance import run_info, write_json
from audiokit.train.tasks.enhance import read_noisy_set

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "enhance_speech16k.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "enhancer_frontends.json"
METRICS = ("pesq", "stoi", "si_sdr")


def train(name: str, run_dir: Path, steps: int, overrides: list[str]) -> float:
    """Train (or finish training) the ``name`` variant to ``steps``; returns the wall time (s) spent."""
    settings = [f"model.options.band_features={name}", f"run.max_steps={steps}", f"eval.every_steps={steps}"]
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


def scores(summary: Summary) -> dict:
    """``{metric: {"mean", "ci95"}}`` of :data:`METRICS`."""
    return {m: {"mean": summary.mean[m], "ci95": summary.ci95[m]} for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per front end")
    parser.add_argument("--clips", type=int, default=200, help="validation clips scored")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation", help="run directories")
    parser.add_argument("--set", action="append", default=[], help="extra recipe override (all runs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = read_noisy_set("valid_noisy_16k", 16000, args.clips, 6.0)
    noisy_rows = [{"file": name, **score_pair(pair[1], pair[0], 16000)} for name, pair in clips]
    result: dict = {"recipe": str(RECIPE.relative_to(ROOT)), "steps": args.steps, "overrides": args.set}
    result["clips"] = len(clips)
    result["noisy"] = scores(summarize(noisy_rows))
    rows: dict[str, list[dict]] = {}
    for name in BAND_FEATURES:
        run_dir = args.runs / name
        wall = train(name, run_dir, args.steps, args.set)
        model = Enhancer.from_pretrained(run_dir / "model.safetensors")
        rows[name] = score(model, clips)
        result[name] = {
            "train_wall_s_this_call": round(wall, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "scores": scores(summarize(rows[name])),
            "learnt": learnt_front_end(model, clips),
        }
        if name != "erb":
            result[name]["vs_erb"] = {m: paired_difference(rows[name], rows["erb"], m) for m in METRICS}
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    result["run"] = run_info()
    write_json(args.out, result)


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
