"""Downstream use of the front ends on the prepared real data: each front end x 3 seeds, small CNN.

Tasks (labels from the ``audiokit data prepare`` manifests, ``{split}_{role}.jsonl``):
* ``sound_class``: the clip's ``role`` (speech / music / noise, whatever is present);
* ``language_id``: the ``language`` of speech clips, among languages with enough clips in both splits.

Training rows come from ``train_*``, evaluation rows from ``test_*`` (else ``valid_*``); the data
preparation keeps speakers/groups disjoint between splits. Crops are 2 s at 16 kHz, fixed per seed.
Every front end gets the same classifier, optimiser, number of steps and data; front-end
parameters in samples or Hz (DiffSTFT length/hop, Gabor/sinc centre and bandwidth) get learning
rate ``--frontend-lr``. Reports balanced accuracy mean +/- std over seeds.

Usage: ``python benchmarks/frontends_downstream.py [--json] [--max-minutes 60] [--seeds 0 1 2]``;
writes ``benchmarks/results/frontends_downstream.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiokit.data.manifest import manifest_dir, read_manifest
from audiokit.frontends import FRONTENDS
from audiokit.io import load
from audiokit.models import AudioClassifier
from audiokit.provenance import run_info, write_json

SAMPLE_RATE = 16000
CROP = 2 * SAMPLE_RATE
RESULTS = Path(__file__).resolve().parent / "results"
# adaptive front end sized for CPU training: 3 banks, 321 taps
ADAPTIVE_OPTIONS = {"banks": ("mel", "erb", "gabor"), "filter_length": 321, "segment_frames": 50}


def read_split(directory: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted(directory.glob(f"{split}_*.jsonl")):
        rows += read_manifest(path)
    return rows


def crops(
    rows: list[dict], label_of, per_class: int, rng: np.random.Generator
) -> tuple[torch.Tensor, list[str]]:
    """Up to ``per_class`` random 2 s crops per label (clips shuffled, several crops per long clip)."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        label = label_of(row)
        if label is not None:
            by_label.setdefault(label, []).append(row)
    audio, labels = [], []
    for label, items in sorted(by_label.items()):
        order = rng.permutation(len(items))
        per_clip = max(1, -(-per_class // len(items)))
        taken = 0
        for i in order:
            if taken >= per_class:
                break
            wav = load(items[i]["path"], sample_rate=SAMPLE_RATE, channels=1)[0][0]
            for _ in range(min(per_clip, per_class - taken)):
                if wav.shape[-1] <= CROP:
                    crop = torch.nn.functional.pad(wav, (0, CROP - wav.shape[-1]))
                else:
                    start = int(rng.integers(0, wav.shape[-1] - CROP))
                    crop = wav[start : start + CROP]
                audio.append(crop)
                labels.append(label)
                taken += 1
    return (torch.stack(audio) if audio else torch.zeros(0, CROP)), labels


def balanced_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[target == c] == c) for c in np.unique(target)]))


def train_one(
    name: str, seed: int, data: dict, steps: int, args: argparse.Namespace, evaluate: bool = True
) -> dict:
    torch.manual_seed(seed)
    kwargs = ADAPTIVE_OPTIONS if name == "adaptive" else {}
    model = AudioClassifier(len(data["classes"]), SAMPLE_RATE, frontend=name, **kwargs)
    opt = torch.optim.Adam(model.parameter_groups(args.lr, args.frontend_lr))
    x, y = data["train_x"], data["train_y"]
    gen = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (args.batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_seconds = time.perf_counter() - began
    if not evaluate:
        return {"train_seconds": train_seconds}
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(chunk).argmax(-1) for chunk in data["test_x"].split(64)]).numpy()
    result = {
        "seed": seed,
        "steps": steps,
        "train_seconds": train_seconds,
        "balanced_accuracy": balanced_accuracy(pred, data["test_y"].numpy()),
        "accuracy": float(np.mean(pred == data["test_y"].numpy())),
    }
    if name == "diffstft":
        result["learned_win_length"] = float(model.frontend.stft.lengths().detach())
    if name == "adaptive":
        with torch.no_grad():
            usage = torch.cat([model.frontend.mixing_weights(c) for c in data["test_x"].split(64)]).mean(
                (0, 1)
            )
        result["bank_usage"] = dict(zip(ADAPTIVE_OPTIONS["banks"], usage.tolist(), strict=True))
    return result


def step_seconds(name: str, data: dict, args: argparse.Namespace) -> float:
    """Time of one training step (mean of three, after one warm-up step)."""
    train_one(name, 0, data, 1, args, evaluate=False)
    return train_one(name, 0, data, 3, args, evaluate=False)["train_seconds"] / 3


def build_task(task: str, train_rows: list[dict], test_rows: list[dict], args, rng) -> dict | None:
    if task == "sound_class":

        def label_of(row):
            return row.get("role")

    else:
        train_langs = Counter(r.get("language") for r in train_rows if r.get("role") == "speech")
        test_langs = Counter(r.get("language") for r in test_rows if r.get("role") == "speech")
        keep = {lang for lang, n in train_langs.items() if lang and n >= 5 and test_langs.get(lang, 0) >= 2}

        def label_of(row):
            return (
                row.get("language") if row.get("role") == "speech" and row.get("language") in keep else None
            )

    train_x, train_labels = crops(train_rows, label_of, args.train_per_class, rng)
    test_x, test_labels = crops(test_rows, label_of, args.test_per_class, rng)
    classes = sorted(set(train_labels) & set(test_labels))
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    keep_train = [i for i, lab in enumerate(train_labels) if lab in index]
    keep_test = [i for i, lab in enumerate(test_labels) if lab in index]
    return {
        "classes": classes,
        "train_x": train_x[keep_train],
        "train_y": torch.tensor([index[train_labels[i]] for i in keep_train]),
        "test_x": test_x[keep_test],
        "test_y": torch.tensor([index[test_labels[i]] for i in keep_test]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    parser.add_argument("--data", type=Path, default=None, help="data root (default $AUDIOKIT_DATA)")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="training budget for all runs")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frontends", nargs="+", default=list(FRONTENDS), choices=FRONTENDS)
    parser.add_argument("--tasks", nargs="+", default=["sound_class", "language_id"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frontend-lr", type=float, default=1.0)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "frontends_downstream.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory = manifest_dir(args.data)
    train_rows = read_split(directory, "train")
    test_rows = read_split(directory, "test") or read_split(directory, "valid")
    if not train_rows or not test_rows:
        sys.exit(
            f"frontends_downstream: no train/test manifests under {directory}; run `audiokit data prepare`"
        )
    rng = np.random.default_rng(1234)
    tasks = {}
    for task in args.tasks:
        data = build_task(task, train_rows, test_rows, args, rng)
        if data is None:
            print(f"{task}: fewer than two classes present in both splits, skipped", file=sys.stderr)
            continue
        tasks[task] = data
    costs = {(t, f): step_seconds(f, d, args) for t, d in tasks.items() for f in args.frontends}
    # the same number of steps for every front end of a task, within the total budget
    per_step_all = sum(costs.values()) * len(args.seeds)
    steps = max(20, min(args.max_steps, int(args.max_minutes * 60 / max(per_step_all, 1e-9))))
    report = {}
    for task, data in tasks.items():
        report[task] = {
            "classes": data["classes"],
            "train_crops": int(len(data["train_y"])),
            "test_crops": int(len(data["test_y"])),
            "frontends": {},
        }
        for name in args.frontends:
            runs = [train_one(name, seed, data, steps, args) for seed in args.seeds]
            scores = [r["balanced_accuracy"] for r in runs]
            report[task]["frontends"][name] = {
                "balanced_accuracy_mean": statistics.mean(scores),
                "balanced_accuracy_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "runs": runs,
            }
            print(
                f"{task:>12} {name:>9}: balanced accuracy {statistics.mean(scores):.3f} "
                f"+/- {report[task]['frontends'][name]['balanced_accuracy_std']:.3f} ({steps} steps)",
                file=sys.stderr,
            )
    result = {
        "benchmark": "frontends_downstream",
        **run_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_root": str(directory),
        "steps": steps,
        "adaptive_options": ADAPTIVE_OPTIONS,
        "tasks": report,
    }
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
