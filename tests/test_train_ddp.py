"""DDP through torchrun: 2 CPU processes with the gloo backend train in lock-step and resume exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiokit.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "codec_speech16k_tiny.yaml"

SCRIPT = """
import sys
import torch
import torch.distributed as dist
from audiokit.train.recipe import load_recipe
from audiokit.train.trainer import Trainer

recipe, samples, run_dir, max_steps, resume = sys.argv[1:]
overrides = [
    f"data.train={samples}", f"data.valid={samples}", "run.tensorboard=false", "run.max_steps=4",
    "schedule.total_steps=4", "discriminator.start_step=1", "eval.every_steps=2", "eval.bitrates=[800]",
    "data.segment_seconds=0.25",
]
trainer = Trainer(load_recipe(recipe, overrides), run_dir, resume=resume == "1", quiet=True)
assert trainer.runtime.world_size == 2 and dist.get_backend() == "gloo"
trainer.fit(max_steps=int(max_steps))
torch.save(trainer.model.state_dict(), f"{run_dir}/rank{trainer.runtime.rank}.pt")
dist.destroy_process_group()
"""


def _torchrun(tmp_path: Path, run_dir: Path, max_steps: int, resume: bool) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(script), str(TINY), str(ROOT / "samples"), str(run_dir), str(max_steps), str(int(resume))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_stay_in_sync_and_resume_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    _torchrun(tmp_path, straight, 4, resume=False)
    rank0 = torch.load(straight / "rank0.pt", weights_only=True)
    rank1 = torch.load(straight / "rank1.pt", weights_only=True)
    for key in rank0:  # gradients averaged, codebooks all-reduced: the ranks hold the same model
        assert torch.equal(rank0[key], rank1[key]), key
    state = load_checkpoint(straight / "checkpoints" / "latest.pt")
    assert state["step"] == 4 and len(state["rng"]) == 2 and state["data"]["world_size"] == 2
    assert (straight / "eval.jsonl").read_text().count("\n") == 2

    _torchrun(tmp_path, split, 2, resume=False)
    _torchrun(tmp_path, split, 4, resume=True)
    resumed = load_checkpoint(split / "checkpoints" / "latest.pt")
    for key in state["model"]:
        assert torch.equal(state["model"][key], resumed["model"][key]), key
    for key in state["discriminator"]:
        assert torch.equal(state["discriminator"][key], resumed["discriminator"][key]), key
