"""DDP through torchrun: 2 CPU processes with the gloo backend train in lock-step and resume exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from audiokit.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "codec_speech16k_tiny.yaml"

SCRIPT = """
import sys
import time
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


def _torchrun_cli(run_dir: Path, *args: str, wait: bool = True, torchrun: bool = True) -> Any:
    """``torchrun --nproc-per-node 2 -m audiokit train`` of the tiny codec on samples/, into ``run_dir``
    (``torchrun=False``: ``audiokit train --nproc-per-node 2``, the built-in launcher)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("AUDIOKIT_DEBUG", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    if not torchrun:
        command = [sys.executable, "-m"]
    command += ["audiokit", "train", str(TINY), "--run-dir", str(run_dir), "-q"]
    command += [] if torchrun else ["--nproc-per-node", "2"]
    command += ["--set", "run.tensorboard=false", "--set", "data.segment_seconds=0.25", *args]
    if not wait:
        return subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _audiokit_lines(stderr: str) -> list[str]:
    """The lines audiokit printed (torchrun adds its own report of the failed processes)."""
    return [line for line in stderr.splitlines() if line.startswith("audiokit train:")]


@pytest.mark.slow
def test_ddp_setup_error_is_one_line(tmp_path):
    # every process reads the same command line: the error was printed once per process
    done = _torchrun_cli(tmp_path / "run", "--set", "optim.learning_rat=1e-3")
    assert done.returncode != 0
    assert _audiokit_lines(done.stderr) == [
        f"audiokit train: error: {TINY} (with --set overrides): unknown key 'optim.learning_rat'; "
        "did you mean 'learning_rate'?"
    ]


@pytest.mark.slow
def test_ddp_error_in_rank0_only_work_stops_every_rank_in_one_line(tmp_path):
    # only rank 0 reads the validation clips: rank 1 went on to its first collective and failed there
    # with gloo's "Connection closed by peer" as an internal error
    done = _torchrun_cli(tmp_path / "run", "--set", f"data.valid={tmp_path / 'missing'}")
    assert done.returncode != 0
    (line,) = _audiokit_lines(done.stderr)
    assert line.startswith(f"audiokit train: error: data.valid: '{tmp_path / 'missing'}' is neither")


@pytest.mark.slow
def test_ddp_failed_save_on_rank0_stops_every_rank_in_one_line(tmp_path):
    # rank 0 writes the checkpoint and weights while the others wait: a failed write (here a folder where
    # the weights' config goes) stopped rank 0 and left rank 1 to fail in the barrier after it
    run_dir = tmp_path / "run"
    (run_dir / "model.json").mkdir(parents=True)
    done = _torchrun_cli(run_dir, "--max-steps", "4")
    assert done.returncode != 0
    config = run_dir / "model.json"
    assert _audiokit_lines(done.stderr) == [f"audiokit train: error: {config}: Is a directory"]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's processes in /proc")
def test_ddp_process_killed_leaves_one_line_on_the_others(tmp_path):
    # rank 1 killed (the OOM killer, a crash) mid-run: rank 0's collective fails; that was an internal
    # error asking to report it, with gloo's message
    run_dir = tmp_path / "run"
    launcher = _torchrun_cli(run_dir, "--set", "run.max_steps=100000", "--max-minutes", "3", wait=False)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        (rank1,) = [
            pid
            for pid in _children(launcher.pid)
            if b"RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes().replace(b"LOCAL_RANK", b"")
        ]
        os.kill(rank1, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    (line,) = _audiokit_lines(stderr)
    assert line.startswith("audiokit train: error: rank 0: another process of the run has gone (")
    assert "by peer" in line and "internal error" not in stderr


def test_only_a_vanished_peer_counts_as_a_lost_peer():
    """Every DistError counted as "another process of the run has gone", even this process's own failure
    to join the group (a wrong MASTER_ADDR, a store timeout), which then named no cause anywhere."""
    import torch.distributed as dist

    from audiokit.train.runtime import lost_peer

    assert lost_peer(RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:1"))
    assert not lost_peer(dist.DistNetworkError("The client socket has timed out while trying to connect"))
    assert not lost_peer(dist.DistStoreError("Timed out after 901 seconds waiting for clients"))


def test_nproc_per_node_error_is_the_whole_output(tmp_path):
    # torchrun adds its own traceback and report of the failed processes; the built-in launcher nothing
    done = _torchrun_cli(tmp_path / "run", "--set", f"data.valid={tmp_path / 'missing'}", torchrun=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"audiokit train: error: data.valid: '{tmp_path / 'missing'}' is neither")


def test_nproc_per_node_run_dir_error_is_said_once(tmp_path):
    # the same for every process (as no CUDA here): was printed by each of them
    done = _torchrun_cli(tmp_path / "run", "--resume", torchrun=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"audiokit train: error: {tmp_path / 'run' / 'checkpoints' / 'latest.pt'}: nothing to resume "
        "(no checkpoint in the run directory)"
    ]


@pytest.mark.parametrize("how", ["--resume", "--init"])
def test_nproc_per_node_unreadable_checkpoint_is_said_once(tmp_path, how):
    # every process reads the same checkpoint (a truncated one here) while setting up the trainer: the
    # error was printed by each of them (so were a --init of another family and optim.frozen's)
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 cut short")
    args = (
        ["--resume"] if how == "--resume" else ["--init", str(checkpoint), "--run-dir", str(tmp_path / "new")]
    )
    done = _torchrun_cli(tmp_path / "run", *args, torchrun=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"audiokit train: error: {checkpoint}: not a readable audiokit checkpoint"), line


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the launched processes in /proc")
def test_nproc_per_node_ctrl_c_stops_every_rank_with_a_checkpoint(tmp_path):
    # torchrun ended such a stop with 1 (or 134) after its own traceback of the signal
    run_dir = tmp_path / "run"
    settings = ["--set", "run.max_steps=100000", "--set", "eval.every_steps=100000", "--max-minutes", "3"]
    launcher = _torchrun_cli(run_dir, *settings, wait=False, torchrun=False)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        ranks = _children(launcher.pid)
        launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert len(ranks) == 2 and launcher.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("audiokit train: stopped by SIGINT at step ") and "continue with --resume" in line
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["data"]["world_size"] == 2 and state["step"] == int(line.split("at step ")[1].split(";")[0])
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks)


def test_nproc_per_node_under_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    from audiokit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(TINY), "--run-dir", str(tmp_path / "run"), "--nproc-per-node", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        "audiokit train: error: --nproc-per-node: this process was started by torchrun (WORLD_SIZE is set)"
    )


def test_nproc_per_node_beyond_the_cores_is_refused_before_any_process_starts(tmp_path, capsys):
    """200 processes on 2 cores took the machine's memory and the kernel's OOM killer took others."""
    from audiokit.cli import main

    cores = len(os.sched_getaffinity(0))
    run = tmp_path / "run"
    assert main(["train", str(TINY), "--run-dir", str(run), "--nproc-per-node", str(cores + 1)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--nproc-per-node {cores + 1}: this machine gives this process" in err
    assert f"start at most {cores} " in err and not run.exists()


def test_nproc_per_node_notices_a_later_rank_failing_first(monkeypatch):
    # only the first running process was polled: rank 1 killed while rank 0 ran was not seen until rank 0
    # ended (no grace period; the exit code was rank 0's 1, not 137 for rank 1's SIGKILL)
    from audiokit.train import launch

    monkeypatch.setattr(launch, "GRACE_SECONDS", 0.5)
    rank0 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30); raise SystemExit(1)"])
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    rank1 = subprocess.Popen([sys.executable, "-c", killed])
    try:
        start = time.monotonic()
        assert launch._wait([rank0, rank1], []) == 128 + signal.SIGKILL
        assert time.monotonic() - start < 15
    finally:
        rank0.kill()
        rank0.wait()


def test_nproc_per_node_a_rank_aborted_after_its_peer_failed_is_not_the_cause():
    """gloo aborts (SIGABRT) a process whose peer has gone: a run whose rank 0 failed on bad input exited
    134, now and then, instead of rank 0's 1 (a flaky CI failure)."""
    from audiokit.train import launch

    aborted = "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"
    rank1 = subprocess.Popen([sys.executable, "-c", aborted])
    rank1.wait()
    rank0 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(1)"])
    assert launch._wait([rank0, rank1], []) == 1


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the processes follow the launcher by prctl")
def test_nproc_per_node_ranks_stop_with_a_checkpoint_when_the_launcher_is_killed(tmp_path):
    # kill -9 of the launcher (a scheduler, the OOM killer) left its ranks training on, unseen, to the end
    run_dir = tmp_path / "run"
    settings = ["--set", "run.max_steps=100000", "--set", "eval.every_steps=100000", "--max-minutes", "3"]
    launcher = _torchrun_cli(run_dir, *settings, wait=False, torchrun=False)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        ranks = _children(launcher.pid)
        launcher.kill()
        launcher.wait(timeout=60)
        deadline = time.monotonic() + 120
        while any(Path(f"/proc/{pid}").exists() for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        launcher.kill()
        for pid in ranks:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    assert len(ranks) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in ranks)
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["data"]["world_size"] == 2


def test_nproc_per_node_cap_without_sched_getaffinity(tmp_path, monkeypatch, capsys):
    """macOS has no os.sched_getaffinity: the cap on the processes was an internal AttributeError."""
    from audiokit.cli import main

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    cores = os.cpu_count() or 1
    run = tmp_path / "run"
    assert main(["train", str(TINY), "--run-dir", str(run), "--nproc-per-node", str(cores + 1)]) == 1
    assert f"start at most {cores} " in capsys.readouterr().err and not run.exists()
