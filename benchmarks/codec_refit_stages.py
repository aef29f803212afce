"""Initial weights for retraining the deep codebooks of a codec: stages ``FIRST+1 .. n_q`` refitted to
the latent residual they quantize, the rest as they are.

Each refitted stage's in-projection becomes the top principal directions (``codebook_dim`` of them) of
the residual entering it on training speech, its out-projection their transpose plus the residual's
mean, and its codewords k-means of the projected residual; the next stage is fitted on what is left.
Stages up to ``FIRST`` (1.5 and 3 kbps of ``speech-16k``: 3 and 6 codebooks) keep their codes, so only
the higher rates change. docs/training.md, "Session 44", has the run that trains from the result.

Usage: ``python benchmarks/codec_refit_stages.py OUT.safetensors [--model speech-16k] [--first 6]
[--frames 60000] [--seed 1]`` (training clips from ``$AUDIOKIT_DATA/manifests/train_speech.jsonl``).
"""

from __future__ import annotations

import argparse
import random

import torch

from audiokit.data.manifest import manifest_path, read_manifest
from audiokit.data.paths import data_root
from audiokit.io import load
from audiokit.models import Codec
from audiokit.quantize.kmeans import kmeans

KMEANS_ITERS = 25
CLIP_SECONDS = 6.0  # at most this much of each clip, so that the frames come from many voices


@torch.no_grad()
def training_latents(codec: Codec, frames: int, seed: int) -> torch.Tensor:
    """Encoder latents ``(1, dim, >= frames)`` of shuffled training clips of 1 s or more."""
    rows = read_manifest(manifest_path("train", "speech"), data_root())
    random.Random(seed).shuffle(rows)
    latents, total = [], 0
    for row in rows:
        if row.get("seconds", 0.0) < 1.0:
            continue
        wav, _ = load(row["path"], sample_rate=codec.sample_rate, channels=1)
        wav = wav[:, : int(CLIP_SECONDS * codec.sample_rate)]
        latents.append(codec._latent(codec._fold(wav[None]))[0])
        total += latents[-1].shape[-1]
        if total >= frames:
            break
    return torch.cat(latents, -1)[None]


@torch.no_grad()
def refit(codec: Codec, latents: torch.Tensor, first: int) -> list[tuple[float, float]]:
    """Refit stages ``first ..`` of ``codec`` in place on ``latents`` ``(1, dim, N)``; returns each refitted
    stage's mean squared residual norm before and after it."""
    stages = codec.quantizer.quantizers
    residual = latents.clone()
    for stage in stages[:first]:
        residual = residual - stage.decode(stage.encode(residual))
    rows = residual[0].t()  # (N, dim)
    energies = []
    for stage in stages[first:]:
        mean = rows.mean(0)
        directions = torch.linalg.svd(rows - mean, full_matrices=False).Vh[: stage.codebook_dim]
        centres, counts = kmeans((rows - mean) @ directions.t(), stage.codebook_size, KMEANS_ITERS)
        stage.in_proj.weight.copy_(directions[:, :, None])
        stage.in_proj.bias.copy_(-(directions @ mean))
        stage.out_proj.weight.copy_(directions.t()[:, :, None])
        stage.out_proj.bias.copy_(mean)
        stage.codebook.copy_(centres)
        stage.embed_sum.copy_(centres * counts[:, None])
        stage.cluster_size.copy_(counts)
        stage.initialized.fill_(True)
        before = float(rows.square().sum(1).mean())
        rows = rows - stage.decode(stage.encode(rows.t()[None]))[0].t()
        energies.append((before, float(rows.square().sum(1).mean())))
    return energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--model", default="speech-16k")
    parser.add_argument("--first", type=int, default=6, help="stages kept as they are (default 6)")
    parser.add_argument("--frames", type=int, default=60000, help="latent frames to fit on (default 60000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    codec = Codec.from_pretrained(args.model).eval()
    latents = training_latents(codec, args.frames, args.seed)
    for index, (before, after) in enumerate(refit(codec, latents, args.first), args.first + 1):
        print(f"stage {index}: mean squared residual {before:.3f} -> {after:.3f}")
    print(codec.save_pretrained(args.out))


if __name__ == "__main__":
    main()
