"""Training, packing and model cards never lose a user's files or records, and bad input is one line:
real tiny runs on samples/, real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audiokit.cli import main
from audiokit.errors import UsageError
from audiokit.evaluation.training_record import check_run_weights, training_record
from audiokit.train.checkpoint import load_checkpoint, save_checkpoint
from audiokit.train.recipe import load_recipe
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TINY = ROOT / "recipes" / "codec_speech16k_tiny.yaml"
QUICK = [f"data.train={SAMPLES}", "data.valid=null", "run.tensorboard=false", "discriminator.kinds=[]"]


def _train(run: Path, steps: int, *overrides: str, resume: bool = False) -> Trainer:
    trainer = Trainer(load_recipe(TINY, [*QUICK, *overrides]), run, resume=resume, quiet=True)
    trainer.fit(max_steps=steps)
    trainer.close()
    return trainer


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err and "Traceback" not in err, err
    return err


def test_card_keeps_existing_cards_and_takes_only_the_runs_weights(tmp_path, capsys):
    run, other, out = tmp_path / "run", tmp_path / "other", tmp_path / "cards"
    _train(run, 2)
    _train(other, 1)
    card = ["card", "--valid", str(SAMPLES), "--glob", "speech_fr_16k_a*", "--bitrates", "0.4", "-q"]
    # weights of another run: refused before anything is measured or written
    assert main([*card, "-m", str(run), "--run-dir", str(other), "--out", str(out)]) == 1
    assert "not of the run" in _one_error_line(capsys) and not out.exists()
    # a card already there (named after the run directory, not the config the tiny recipe inherits)
    out.mkdir()
    (out / "run.md").write_text("my card\n")
    # as run.json recorded `python -m audiokit train ...` before it recorded the command as `audiokit`
    info = json.loads((run / "run.json").read_text())
    info["sessions"][0]["command"] = [str(ROOT / "audiokit" / "__main__.py"), "train", str(TINY)]
    (run / "run.json").write_text(json.dumps(info))
    assert main([*card, "-m", str(run), "--run-dir", str(run), "--out", str(out)]) == 1
    assert "--force" in _one_error_line(capsys)
    assert (out / "run.md").read_text() == "my card\n" and sorted(p.name for p in out.iterdir()) == ["run.md"]
    assert main([*card, "-m", str(run), "--run-dir", str(run), "--out", str(out), "-f"]) == 0
    written = json.loads((out / "run.json").read_text())
    assert written["name"] == "run" and (out / "run-spectrograms.png").is_file()
    assert (out / "run.md").read_text().startswith("# run (a speech-16k model, not shipped)\n")
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary files left
    # the Reproduce section shows the command as typed, not python's path to audiokit/__main__.py, with
    # the recipe as a clone holds it
    assert "\naudiokit train recipes/codec_speech16k_tiny.yaml\n" in (out / "run.md").read_text()


def test_card_accepts_weights_the_run_saved_earlier_or_holds_in_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    _train(run, 1, "run.checkpoint_every=1", "run.keep_every=1")
    earlier = tmp_path / "earlier.safetensors"
    earlier.write_bytes((run / "model.safetensors").read_bytes())
    earlier.with_suffix(".json").write_text((run / "model.json").read_text())
    _train(run, 2, "run.checkpoint_every=1", "run.keep_every=1", resume=True)
    check_run_weights(str(earlier), run)  # run.json records every saved model.safetensors
    info = json.loads((run / "run.json").read_text())
    assert len(info["weights"]) == 2
    del info["weights"]  # a run from before the trainer recorded them: its kept checkpoints answer
    (run / "run.json").write_text(json.dumps(info))
    check_run_weights(str(earlier), run)
    (run / "checkpoints" / "step_00000001.pt").unlink()
    check_run_weights(str(earlier), run)  # nor a checkpoint: weights of the run's architecture are taken
    meta = json.loads(earlier.with_suffix(".json").read_text())
    meta["config"]["latent_dim"] += 1
    earlier.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="not of the run"):  # another architecture
        check_run_weights(str(earlier), run)
    info["weights"] = {}  # a run that records its saves, none of them these weights
    (run / "run.json").write_text(json.dumps(info))
    earlier.with_suffix(".json").write_text((run / "model.json").read_text())
    with pytest.raises(UsageError, match="not of the run"):
        check_run_weights(str(earlier), run)


def test_a_failed_pack_keeps_the_pack_it_would_have_replaced(tmp_path, capsys):
    run, packed = tmp_path / "run", tmp_path / "packed"
    _train(run, 1)
    assert main(["checkpoint", "pack", str(run), str(packed), "-q"]) == 0
    (packed / "README.md").write_text("what this state is\n")
    before = {p.name: p.read_bytes() for p in packed.iterdir()}
    assert main(["checkpoint", "pack", str(run), str(packed), "-q"]) == 1
    assert "-f/--force" in _one_error_line(capsys)
    assert main(["checkpoint", "pack", str(run), str(packed), "-f", "--max-shard-mb", "0.01"]) == 1
    assert "--max-shard-mb" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in packed.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed", "run"]  # no temporary folders
    assert main(["checkpoint", "pack", str(run), str(tmp_path / "new"), "--max-shard-mb", "0"]) == 2
    assert "--max-shard-mb" in _one_error_line(capsys)
    assert main(["checkpoint", "pack", str(run), str(run)]) == 1
    assert f"{run}: is the input {run.resolve()} or holds it" in _one_error_line(capsys)
    assert main(["checkpoint", "pack", str(run), str(tmp_path)]) == 1  # a folder holding the run
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed", "run"]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoints", "metrics.jsonl", "model.json", "model.safetensors", "recipe.yaml", "run.json"]
    )
    # a pack into the current folder, named "." or not: one line, nothing written (it failed with "Device
    # or resource busy" and left a folder behind that later packs refused)
    here = tmp_path / "here"
    here.mkdir()
    previous = Path.cwd()
    try:
        os.chdir(here)
        for target in (".", str(here)):
            assert main(["checkpoint", "pack", str(run), target, "-q"]) == 1
            assert "current folder" in _one_error_line(capsys)
        assert main(["checkpoint", "pack", str(run), "sub", "-q"]) == 0
    finally:
        os.chdir(previous)
    capsys.readouterr()
    assert (here / "sub" / "state.json").is_file() and sorted(p.name for p in here.iterdir()) == ["sub"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # --force replaces the state and keeps the README beside it
    _train(run, 2, resume=True)
    capsys.readouterr()
    assert main(["checkpoint", "pack", str(run), str(packed), "-f", "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"{packed}: ")  # -q keeps the result line
    assert json.loads((packed / "state.json").read_text())["step"] == 2
    assert (packed / "README.md").read_text() == "what this state is\n"


CHECKPOINT_EVERY = 4


def _after_a_checkpoint(lines: str) -> bool:
    """Whether the last whole line of ``metrics.jsonl`` text is the step after the second checkpoint."""
    whole = lines.splitlines()[: lines.count("\n")]
    return bool(whole) and json.loads(whole[-1])["step"] == 2 * CHECKPOINT_EVERY + 1


def test_sigkill_then_resume_records_each_step_once(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "audiokit", "train", str(TINY), "--run-dir", str(run), "-q"]
    command += [
        "--set",
        f"data.train={SAMPLES}",
        "--set",
        f"data.valid={SAMPLES}",
        "--set",
        "run.log_every=1",
    ]
    command += [
        "--set",
        f"run.checkpoint_every={CHECKPOINT_EVERY}",
        "--set",
        "eval.every_steps=2",
        "--set",
        "eval.bitrates=[400]",
    ]
    command += ["--set", "run.tensorboard=false", "--max-steps", "100000"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 180
    # killed just after the step that follows a checkpoint (whose line comes after the checkpoint), so
    # that steps are logged beyond the checkpoint: killed at a random moment, a run could stop right
    # after a checkpoint and leave nothing to run again
    while not (metrics.is_file() and _after_a_checkpoint(metrics.read_text())):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    assert json.loads((run / "run.json").read_text())["sessions"][0]["command"][:2] == ["audiokit", "train"]
    crashed = _steps(metrics)
    assert max(crashed) > saved  # steps logged after the checkpoint, which the resume runs again
    resumed = Trainer(load_recipe(TINY, [*QUICK, "run.log_every=1"]), run, resume=True, quiet=True)
    end = max(crashed) + 2
    resumed.fit(max_steps=end)
    resumed.close()
    assert _steps(metrics) == list(range(1, end + 1))
    evaluated = _steps(run / "eval.jsonl")
    assert evaluated == sorted(set(evaluated)) and all(s <= saved for s in evaluated)
    # the card counts each logged window once
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    loop = training_record(run)["loop_wall_seconds"]
    assert loop == pytest.approx(sum(1 / r["speed/steps_per_second"] for r in rows), abs=0.1)
    # records written before the trainer purged them (the crashed session's lines, then the resumed
    # session's): the card drops the lines the resume logged again
    metrics.write_text(
        "".join(json.dumps({"step": s, "speed/steps_per_second": 1.0}) + "\n" for s in crashed)
    )
    with open(metrics, "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows if r["step"] > saved)
    kept = [r for r in rows if r["step"] <= saved]
    expected = (
        sum(1 / r["speed/steps_per_second"] for r in rows)
        + sum(1.0 for s in crashed if s <= saved)
        - sum(1 / r["speed/steps_per_second"] for r in kept)
    )
    assert training_record(run)["loop_wall_seconds"] == pytest.approx(expected, abs=0.1)
    # a new run in the directory (no checkpoint or weights left) starts clean records
    for path in [*(run / "checkpoints").iterdir(), run / "model.safetensors"]:
        path.unlink()
    _train(run, 2, "run.log_every=1")
    assert _steps(metrics) == [1, 2] and not (run / "eval.jsonl").exists()


def test_tensorboard_keeps_the_step_a_resume_starts_at(tmp_path):
    """TensorBoard's ``purge_step`` hides the events at and after it: a resume from step 2 passed 2, so
    the curves lost the last step (and evaluation) of every session that metrics.jsonl kept."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run, settings = tmp_path / "run", [f"data.valid={SAMPLES}", "run.tensorboard=true", "run.log_every=1"]
    settings += ["eval.every_steps=2", "eval.bitrates=[400]", "eval.audio_examples=0"]
    _train(run, 2, *settings)
    _train(run, 3, *settings, resume=True)
    events = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/mel")] == _steps(run / "metrics.jsonl") == [1, 2, 3]
    assert [e.step for e in events.Scalars("eval/pesq@0.4kbps")] == _steps(run / "eval.jsonl") == [2, 3]


def test_a_new_run_never_replaces_weights_in_its_directory(tmp_path, capsys):
    """A soup of `checkpoint average`, or a run whose checkpoints were deleted: the first save of a new
    run there replaced its model.safetensors without a word, even when --init had read it."""
    _train(tmp_path / "a", 1)
    soup = tmp_path / "soup"
    assert main(["checkpoint", "average", str(soup), str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    kept = (soup / "model.safetensors").read_bytes()
    capsys.readouterr()
    args = ["train", str(TINY), "--run-dir", str(soup), "-q", *[f"--set={s}" for s in QUICK]]
    for init in ([], ["--init", str(soup)]):
        assert main([*args, *init]) == 1
        err = _one_error_line(capsys)
        assert f"{soup / 'model.safetensors'}: already exists" in err and "--run-dir NEW_DIR" in err
    assert (soup / "model.safetensors").read_bytes() == kept
    assert sorted(p.name for p in soup.iterdir()) == ["model.json", "model.safetensors"]


def test_resume_keeps_the_seed(tmp_path):
    _train(tmp_path, 1)
    with pytest.raises(UsageError, match=r"run\.seed: .* seed 0, the recipe now says 5.*--init"):
        Trainer(load_recipe(TINY, [*QUICK, "run.seed=5"]), tmp_path, resume=True, quiet=True)
    # settings a resume may change still may
    _train(tmp_path, 2, "optim.learning_rate=1e-4", "run.threads=1", resume=True)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("optim.betas=[0.9]", "optim.betas"),
        ("optim.betas=[2,3]", "optim.betas"),
        ("optim.weight_decay=-1", "optim.weight_decay"),
        ("losses.mel=-1", "losses.mel"),
        ("run.device=foo", "run.device"),
        ("data.segment_seconds=0.001", "data.segment_seconds"),
        ("schedule.total_steps=0", "schedule.total_steps"),
        ("run.threads=0", "run.threads"),
        ("data.glob=*", "quote the value"),
    ],
)
def test_bad_recipe_values_are_one_line_before_the_run_dir_exists(tmp_path, capsys, setting, key):
    run = tmp_path / "run"
    assert main(["train", str(TINY), "--run-dir", str(run), "--set", setting]) == 1
    assert key in _one_error_line(capsys) and not run.exists()


def test_train_argument_and_input_errors(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", str(TINY), "--run-dir", str(run), "--set", f"data.train={SAMPLES}"]
    for option in (["--max-steps", "-3"], ["--max-minutes", "-1"], ["--max-steps", "0"]):
        assert main([*base, *option]) == 2
        assert option[0] in _one_error_line(capsys)
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text("run:\n  seed: 1\n  max_steps: 3\n  seed: 2\n")
    assert main(["train", str(duplicated), "--run-dir", str(run)]) == 1
    assert f"{duplicated}:4: key 'seed' given twice" in _one_error_line(capsys)
    assert main([*base, "--init", str(ROOT / "README.md")]) == 1
    assert "not a model file" in _one_error_line(capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", str(TINY), "--run-dir", str(run), "--set", f"data.train={empty}"]) == 1
    err = _one_error_line(capsys)
    assert "lists no clips" in err and "speech_fr_16k_" not in err
    assert not run.exists()


def test_quiet_training_still_prints_its_result(tmp_path, capsys):
    args = ["train", str(TINY), "--run-dir", str(tmp_path), "-q", "--max-steps", "1"]
    for setting in QUICK:
        args += ["--set", setting]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 1 and result["stopped"] == "max_steps"


@pytest.mark.parametrize("record", ['{"seed": 0, "sessi', '{"seed": 0}', "[]"])
def test_resume_with_a_broken_run_record_is_one_line(tmp_path, capsys, record):
    """A run.json edited by hand or cut short by a copy was an internal error (JSONDecodeError, KeyError)."""
    _train(tmp_path, 1)
    (tmp_path / "run.json").write_text(record)
    recipe = (tmp_path / "recipe.yaml").read_bytes()
    args = ["train", str(TINY), "--run-dir", str(tmp_path), "--resume", "-q", "--max-steps", "2"]
    assert main([*args, *[f"--set={s}" for s in QUICK]]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"audiokit train: error: {tmp_path / 'run.json'}: not ") and "move it away" in err
    assert (tmp_path / "run.json").read_text() == record and (tmp_path / "recipe.yaml").read_bytes() == recipe


def test_a_session_removes_the_temporary_files_of_a_killed_save(tmp_path):
    """A SIGKILL inside torch.save left `.latest.RANDOM.tmp.pt` (up to a whole checkpoint) in the run
    directory, and every later session kept it."""
    _train(tmp_path, 1)
    stale = [
        tmp_path / "checkpoints" / ".latest.x9egze_g.tmp.pt",
        tmp_path / "checkpoints" / ".step_00000004.ab12cd34.tmp.pt",
        tmp_path / ".model.ab12cd34.tmp.safetensors",
        tmp_path / ".run.ab12cd34.tmp.json",
    ]
    kept = [tmp_path / "checkpoints" / "notes.txt", tmp_path / ".notes.ab12cd34.tmp.txt"]
    for path in [*stale, *kept]:
        path.write_bytes(b"\0" * 64)
    _train(tmp_path, 2, resume=True)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def _write_under_file_size_limit(statement: str, limit: int = 65536) -> subprocess.CompletedProcess:
    """Run the Python ``statement`` in a child whose writes fail beyond ``limit`` bytes of a file
    (``RLIMIT_FSIZE``, SIGXFSZ ignored: ``write`` raises EFBIG, as a full device raises ENOSPC)."""
    code = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); {statement}"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_checkpoint_write_that_fails_is_an_os_error_naming_it(tmp_path):
    """A checkpoint whose write fails midway is an OSError naming it ("No space left on device" on a
    full disk; one CLI line), and nothing is left (was: torch's RuntimeError "unexpected pos ...", which
    ``audiokit train`` showed as an internal error)."""
    path = tmp_path / "checkpoints" / "latest.pt"
    done = _write_under_file_size_limit(
        "import torch; from audiokit.train.checkpoint import save_checkpoint; "
        f"save_checkpoint({str(path)!r}, {{'weights': torch.zeros(100_000)}})"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"OSError: [Errno 27] File too large: '{path}'"
    assert list(path.parent.iterdir()) == []


def test_a_pack_whose_write_fails_is_one_line_and_leaves_nothing(tmp_path):
    """``checkpoint pack`` whose shard cannot be written (a full device; here past RLIMIT_FSIZE) is one
    line naming the pack and leaves no folder (was: "internal error: SafetensorError: Error while
    serializing: I/O error", exit 70)."""
    run, out = tmp_path / "run", tmp_path / "pack"
    state = {"step": 1, "model": {"w": torch.zeros(100_000)}, "ema": {}, "optimizers": {}, "schedulers": {}}
    save_checkpoint(run / "checkpoints" / "latest.pt", {**state, "rng": [], "data": {}})
    done = _write_under_file_size_limit(
        "from audiokit.cli import main; "
        f"raise SystemExit(main(['checkpoint', 'pack', {str(run)!r}, {str(out)!r}]))"
    )
    assert (done.returncode, done.stderr) == (1, f"audiokit checkpoint: error: {out}: File too large\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_tensorboard_write_that_fails_ends_the_run_in_one_line(tmp_path):
    """A full disk under TensorBoard's event file printed the writer thread's traceback, then the run
    ended with "error: File too large" naming nothing. Now: one line naming the TensorBoard folder. The
    limit (20 kB a file) is reached by the event file (about 1.5 kB a step here) before any other."""
    run = tmp_path / "run"
    overrides = [*QUICK[:2], "discriminator.kinds=[]", "run.log_every=1", "run.checkpoint_every=1000"]
    argv = ["train", str(TINY), "--run-dir", str(run), "-q", "--max-steps", "60"]
    argv += [f"--set={item}" for item in overrides]
    statement = f"from audiokit.cli import main; raise SystemExit(main({argv!r}))"
    done = _write_under_file_size_limit(statement, 20_000)
    expected = f"audiokit train: error: {run / 'tensorboard'}: File too large\n"
    assert (done.returncode, done.stderr) == (1, expected)


def test_a_tensorboard_folder_that_cannot_be_written_at_the_start_is_one_line(tmp_path):
    """The event file's first write failing (a full disk, past RLIMIT_FSIZE here) printed the writer
    thread's traceback (its hook was set after the writer started) and "error: File too large" naming
    nothing. Now: one line naming the TensorBoard folder."""
    run = tmp_path / "run"
    argv = ["train", str(TINY), "--run-dir", str(run), "-q", "--max-steps", "1"]
    argv += [f"--set={item}" for item in QUICK[:2]]
    statement = f"from audiokit.cli import main; raise SystemExit(main({argv!r}))"
    # room for the run's lock file ("pid N on HOST, since TIME", audiokit.train.run_lock), not for the
    # event file's first record (88 bytes)
    lock_line = len(f"pid 4194304 on {platform.node()}, since 2026-12-08T03:15:00+00:00\n")
    if lock_line >= 80:
        pytest.skip("a host name too long to fit the lock file under the event file's first record")
    done = _write_under_file_size_limit(statement, 80)
    expected = f"audiokit train: error: {run / 'tensorboard'}: File too large\n"
    assert (done.returncode, done.stderr) == (1, expected)


def test_a_read_only_run_directory_is_one_line_naming_the_file(tmp_path):
    """Resuming in a read-only run directory (here a read-only bind mount in a private mount namespace)
    ended in the writer thread's traceback and "error: b'.../events.out.tfevents...': Read-only file
    system", a bytes file name. Now: one line naming the first file it cannot write."""
    run = tmp_path / "run"
    _train(run, 1, "run.tensorboard=true")
    argv = ["train", str(TINY), "--run-dir", str(run), "--resume", "-q", "--max-steps", "2"]
    argv += [f"--set={item}" for item in QUICK[:2]]
    statement = f"from audiokit.cli import main; raise SystemExit(main({argv!r}))"
    script = f"mount --bind -o ro {run} {run} && exec {sys.executable} -c {json.dumps(statement)}"
    try:
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if "mount" in done.stderr or "unshare" in done.stderr:
        pytest.skip(f"no private read-only mount here: {done.stderr.strip()}")
    # the run's lock file is the first file a session writes (audiokit.train.run_lock)
    assert done.returncode == 1 and done.stderr == (
        f"audiokit train: error: {run / '.lock'}: Read-only file system\n"
    ), done.stderr


def test_tensorboard_asked_for_but_missing_is_said(tmp_path, monkeypatch, capsys):
    """`run.tensorboard: true` without the package (the Docker image has none) wrote no event files and
    said nothing; now one note says so and where the same scalars are."""
    from audiokit.train.records import RunRecords

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    records = RunRecords(tmp_path, tensorboard=True, step=0)
    assert records.writer is None and not (tmp_path / "tensorboard").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TensorBoard is not installed" in err and "metrics.jsonl" in err
    RunRecords(tmp_path, tensorboard=False, step=0)
    assert capsys.readouterr().err == ""


def test_one_process_trains_a_run_and_a_killed_session_is_recorded_as_killed(tmp_path, capsys):
    """Two sessions writing one run directory would overwrite each other's checkpoints (and the second
    one's start-up removed the first one's saves in flight): a resume while a real training process
    holds the run is one line naming it. Once it is SIGKILLed, the resume goes on, says so, and records
    the dead session as killed (it had no end)."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "audiokit", "train", str(TINY), "--run-dir", str(run), "-q"]
    for setting in [*QUICK, "run.checkpoint_every=1", "run.log_every=1"]:
        command += ["--set", setting]
    process = subprocess.Popen(
        [*command, "--max-steps", "100000"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    checkpoint, deadline = run / "checkpoints" / "latest.pt", time.monotonic() + 180
    try:
        while not checkpoint.is_file():
            assert process.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.01)
        resume = ["train", str(TINY), "--run-dir", str(run), "--resume", "--max-steps", "100000", "-q"]
        for setting in QUICK:
            resume += ["--set", setting]
        capsys.readouterr()
        assert main(resume) == 1
        err = _one_error_line(capsys)
        assert f"{run}: another training process is using this run directory (pid {process.pid} on " in err
        assert process.poll() is None  # untouched
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    reached = max(_steps(run / "metrics.jsonl"))
    resumed = Trainer(load_recipe(TINY, QUICK), run, resume=True)
    saved = resumed.step
    resumed.fit(max_steps=saved + 1)
    resumed.close()
    note = capsys.readouterr().err
    assert f"ended without a record after step {max(reached, saved)}: it was killed" in note
    first, second = json.loads((run / "run.json").read_text())["sessions"]
    assert first["stopped"] == "killed" and first["ended"] is None
    assert first["end_step"] == max(reached, saved)
    assert second["stopped"] == "max_steps" and second["end_step"] == saved + 1


def test_a_trainer_holds_its_run_until_closed_and_an_error_ends_its_session(tmp_path, monkeypatch):
    settings = [*QUICK, "run.checkpoint_every=1"]
    first = Trainer(load_recipe(TINY, settings), tmp_path, quiet=True)
    with pytest.raises(UsageError, match="a Trainer of this process still holds this run directory"):
        Trainer(load_recipe(TINY, settings), tmp_path, quiet=True)
    step = first.train_step

    def failing_second_step(batch):
        if first.step == 1:
            raise RuntimeError("a step that fails")
        return step(batch)

    monkeypatch.setattr(first, "train_step", failing_second_step)
    with pytest.raises(RuntimeError, match="a step that fails"):
        first.fit(max_steps=3)
    first.close()
    session = json.loads((tmp_path / "run.json").read_text())["sessions"][0]
    assert session["stopped"] == "error (RuntimeError)" and session["ended"] and session["end_step"] == 1
    # closed, the run is free; the session that failed is not taken for a killed one
    _train(tmp_path, 2, resume=True)
    sessions = json.loads((tmp_path / "run.json").read_text())["sessions"]
    assert [s["stopped"] for s in sessions] == ["error (RuntimeError)", "max_steps"]


def test_an_error_in_a_second_fit_ends_the_session_as_an_error(tmp_path, monkeypatch):
    """A second fit() of one Trainer that failed left run.json saying the first fit's clean end."""
    trainer = Trainer(load_recipe(TINY, QUICK), tmp_path, quiet=True)
    trainer.fit(max_steps=1)

    def failing_step(batch):
        raise RuntimeError("a step that fails")

    monkeypatch.setattr(trainer, "train_step", failing_step)
    with pytest.raises(RuntimeError, match="a step that fails"):
        trainer.fit(max_steps=3)
    trainer.close()
    (session,) = json.loads((tmp_path / "run.json").read_text())["sessions"]
    assert (session["stopped"], session["end_step"]) == ("error (RuntimeError)", 1)


def test_a_fit_after_close_takes_the_run_again(tmp_path):
    """close() let the run go, but a later fit() of that Trainer trained without taking it back: beside
    another Trainer that held the run."""
    closed = Trainer(load_recipe(TINY, QUICK), tmp_path, quiet=True)
    closed.close()
    holder = Trainer(load_recipe(TINY, QUICK), tmp_path, quiet=True)
    try:
        with pytest.raises(UsageError, match="a Trainer of this process still holds this run directory"):
            closed.fit(max_steps=1)
    finally:
        holder.close()


def test_a_trainer_closed_without_training_ends_its_session_as_closed(tmp_path, capsys):
    _train(tmp_path, 1)
    Trainer(load_recipe(TINY, QUICK), tmp_path, resume=True, quiet=True).close()
    _train(tmp_path, 2, resume=True)
    sessions = json.loads((tmp_path / "run.json").read_text())["sessions"]
    assert [s["stopped"] for s in sessions] == ["max_steps", "closed", "max_steps"]
    assert "killed" not in capsys.readouterr().err
