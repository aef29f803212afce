"""`audiokit train` and `audiokit checkpoint` as a user meets them: settings changed on --resume apply,
and bad recipes, data, run directories, options and packs are one line (exit code != 0) before anything
is written. Real tiny runs on samples/ through the real command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from audiokit.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
ENHANCE = ROOT / "recipes" / "enhance_speech16k_tiny.yaml"
BWE = ROOT / "recipes" / "bwe_8to16_tiny.yaml"


def _train(recipe: Path, run: Path, *args: str) -> int:
    return main(["train", str(recipe), "--run-dir", str(run), "-q", *args])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err and "Traceback" not in err, err
    return err


def test_resume_applies_the_recipes_optimiser_and_ema_settings(tmp_path):
    run = tmp_path / "run"
    assert _train(ENHANCE, run, "--max-steps", "2") == 0
    changed = ["optim.weight_decay=0.25", "optim.betas=[0.5, 0.6]", "optim.ema_decay=0.5"]
    assert _train(ENHANCE, run, "--resume", "--max-steps", "4", *[f"--set={s}" for s in changed]) == 0
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    for group in state["optimizers"]["model"]["param_groups"]:
        assert group["weight_decay"] == 0.25 and tuple(group["betas"]) == (0.5, 0.6)
    assert state["ema"]["decay"] == 0.5 and state["step"] == 4
    assert state["optimizers"]["model"]["state"]  # the moments are still the checkpoint's


def test_progress_in_a_log_is_plain_lines_not_bar_redraws(tmp_path, capsys, monkeypatch):
    """Standard error not a terminal (a log, a pipe): no tqdm bar with its carriage returns, but plain
    progress lines (at most one a minute; every log window here) naming the step and the losses."""
    from audiokit.train import trainer

    monkeypatch.setattr(trainer, "LOG_LINE_SECONDS", 0.0)
    code = main(["train", str(ENHANCE), "--run-dir", str(tmp_path / "run"), "--max-steps", "4"])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("train: step ")]
    assert lines and lines[-1].startswith("train: step 4/4, ") and " complex " in lines[-1], err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.segment_seconds=.inf", "data.segment_seconds"),  # was an OverflowError
        ("data.eq_gain_db=.inf", "data.eq_gain_db"),  # was an OverflowError
        ("optim.learning_rate=.inf", "optim.learning_rate"),  # trained NaN weights without a word
        ("data.target_level_db=.nan", "data.target_level_db"),
        ("data.gain_db=[0, .inf]", "data.gain_db[1]"),
        ("mixture.noise_weights.white=.nan", "mixture.noise_weights.white"),
        ("run.seed=-1", "run.seed"),  # was numpy's ValueError
        ("run.seed=100000000000000000000", "run.seed"),  # was torch's overflow
    ],
)
def test_recipe_numbers_that_cannot_train_are_recipe_errors(tmp_path, capsys, override, key):
    assert _train(ENHANCE, tmp_path / "run", "--set", override) == 1
    err = _one_error_line(capsys)
    assert str(ENHANCE) in err and f"'{key}'" in err
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_text_is_a_recipe_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\xff\xfe task: enhance\n")
    assert _train(recipe, tmp_path / "run") == 1
    assert f"{recipe}: not a YAML text file" in _one_error_line(capsys)


def test_resuming_the_run_of_another_recipe_names_both(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(ENHANCE, run, "--max-steps", "1") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert _train(BWE, run, "--resume") == 1
    err = _one_error_line(capsys)
    assert "task 'enhance' with model.config 'enhance-16k'" in err and "task 'bwe'" in err
    assert str(run / "recipe.yaml") in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_manifest_listing_a_missing_file_fails_before_the_run_starts(tmp_path, capsys):
    manifest = tmp_path / "train.jsonl"
    rows = [{"path": str(SAMPLES / "speech_fr_16k_a.flac"), "seconds": 1.0}]
    rows += [{"path": str(tmp_path / f"gone{i}.flac"), "seconds": 1.0} for i in range(2)]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # the missing clips were found only when a step first drew one, after the run had started
    assert _train(ENHANCE, tmp_path / "run", "--set", f"data.train={manifest}") == 1
    err = _one_error_line(capsys)
    assert f"data.train: {manifest} lists {tmp_path / 'gone0.flac'} (and 1 more), not found" in err
    assert not (tmp_path / "run").exists()


def test_a_bad_device_is_an_error_of_the_option(tmp_path, capsys):
    # it was blamed on '--set overrides' and 'run.device', which the user did not write
    assert _train(ENHANCE, tmp_path / "run", "--device", "gpu") == 2
    err = _one_error_line(capsys)
    assert "argument --device: 'gpu' is not cpu, cuda or cuda:N" in err and "--set" not in err
    assert _train(ENHANCE, tmp_path / "run", "--device", "cpu", "--max-steps", "1") == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["sessions"][0]["device"] == "cpu"


def test_packs_and_checkpoints_without_a_training_state_are_one_line(tmp_path, capsys):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "state.json").write_text("[1]\n")
    assert main(["checkpoint", "unpack", str(pack), str(tmp_path / "a")]) == 1
    assert "state.json is not a JSON object" in _one_error_line(capsys)
    empty = {"format": "audiokit-train-state", "shards": 0, "state": [1]}
    (pack / "state.json").write_text(json.dumps(empty))
    assert main(["checkpoint", "unpack", str(pack), str(tmp_path / "b")]) == 1
    assert "holds no model weights" in _one_error_line(capsys) and not (tmp_path / "b").exists()
    other = tmp_path / "other.pt"
    torch.save([1, 2], other)
    assert _train(ENHANCE, tmp_path / "run", "--init", str(other)) == 1
    assert f"{other}: not an audiokit training checkpoint" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kept", [["model"], ["step", "model", "ema", "optimizers", "schedulers", "rng"]])
def test_a_checkpoint_without_what_a_resume_needs_is_one_line(tmp_path, capsys, kept):
    """A checkpoint that lacks a part of the training state (here weights alone, or all but the data
    position) failed a resume with "internal error: KeyError: 'data'" (or "does not fit this recipe
    ('ema')"), and `checkpoint pack` with "internal error: KeyError: 'step'" or a pack that no resume
    could use. Now both name what is missing, before anything is written."""
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoints" / "latest.pt"
    assert _train(ENHANCE, run, "--max-steps", "1") == 0
    state = torch.load(checkpoint, weights_only=True)
    torch.save({key: state[key] for key in kept}, checkpoint)
    before = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    assert _train(ENHANCE, run, "--resume", "--max-steps", "2") == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"audiokit train: error: {checkpoint}: holds no ") and "cannot be resumed" in err
    assert "data" in err.split(", so")[0], err  # what is missing, named
    assert main(["checkpoint", "pack", str(run), str(tmp_path / "pack")]) == 1
    assert _one_error_line(capsys) == f"audiokit checkpoint: error: {err.split('error: ', 1)[1]}"
    assert not (tmp_path / "pack").exists() and sorted(p.name for p in run.iterdir()) == before


def test_unpack_offers_only_what_it_uses(tmp_path, capsys):
    """`checkpoint unpack` listed pack's --max-shard-mb and -f ("pack: replace ...") and ignored them."""
    for option in (["-f"], ["--max-shard-mb", "8"]):
        assert main(["checkpoint", "unpack", *option, str(tmp_path / "a"), str(tmp_path / "b")]) == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_a_run_directory_that_is_a_file_is_named_as_such(tmp_path, capsys):
    """It was 'FILE: File exists' (the mkdir's errno), which reads as a run directory in use, after the
    model and data were built; --resume said there was nothing to resume."""
    taken = tmp_path / "taken"
    taken.write_text("notes\n")
    for resume in ([], ["--resume"]):
        assert _train(ENHANCE, taken, *resume) == 1
        assert f"{taken}: exists and is not a folder" in _one_error_line(capsys)
        assert _train(ENHANCE, taken / "run", *resume, "--max-steps", "1") == 1  # was 'Not a directory'
        assert f"{taken / 'run'}: {taken} is a file, not a folder" in _one_error_line(capsys)
    run = tmp_path / "run"
    assert _train(ENHANCE, run, "--max-steps", "1") == 0
    assert main(["checkpoint", "pack", str(run), str(tmp_path / "pack")]) == 0
    capsys.readouterr()
    assert main(["checkpoint", "unpack", str(tmp_path / "pack"), str(taken)]) == 1
    assert f"{taken}: exists and is not a folder" in _one_error_line(capsys)
    assert taken.read_text() == "notes\n"


def test_resume_with_another_number_of_processes_says_how_to_go_on(tmp_path, capsys):
    """A checkpoint of 2 torchrun processes resumed by one: the refusal says how many processes wrote it,
    how to resume it, and that --init starts a new run from it (the command it names works); it said
    'written by 2 processes; resume with the same number (got 1)'."""
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoints" / "latest.pt"
    assert _train(ENHANCE, run, "--max-steps", "2") == 0
    state = torch.load(checkpoint, weights_only=True)
    state["data"]["world_size"], state["rng"] = 2, state["rng"] * 2  # as a 2-process run writes it
    torch.save(state, checkpoint)
    capsys.readouterr()
    assert _train(ENHANCE, run, "--resume") == 1
    assert _one_error_line(capsys) == (
        f"audiokit train: error: {checkpoint}: written by a run of 2 processes, this session has 1 process; "
        "--resume continues a run exactly with as many (torchrun --nproc-per-node 2), or start a new run "
        f"from these weights: --init {checkpoint} --run-dir NEW_DIR"
    )
    assert _train(ENHANCE, tmp_path / "new", "--init", str(checkpoint), "--max-steps", "1") == 0


def test_init_with_another_familys_weights_names_both_families(tmp_path, capsys):
    """A bandwidth extender's run (its weights, its checkpoint) or the shipped codec as --init of an
    enhancer recipe: one line naming both families, not a dump of the tensors that do not fit."""
    assert _train(BWE, tmp_path / "bwe", "--max-steps", "1") == 0
    capsys.readouterr()
    for init in [tmp_path / "bwe", tmp_path / "bwe" / "checkpoints" / "latest.pt", "speech-16k"]:
        assert _train(ENHANCE, tmp_path / "run", "--init", str(init)) == 1
        err = _one_error_line(capsys)
        family = "a codec model's" if init == "speech-16k" else "a bwe model's"
        assert f"--init {init}: {family} weights, and the recipe trains an enhancer" in err, err
        assert "state_dict" not in err and not (tmp_path / "run").exists()


def test_resume_with_another_model_size_names_the_changed_option(tmp_path, capsys):
    """--resume with a model option the checkpoint was not trained with names that option and both
    values, not load_state_dict's size mismatches; the --init it offers grows the run's weights."""
    run = tmp_path / "run"
    assert _train(ENHANCE, run, "--max-steps", "1") == 0
    capsys.readouterr()
    assert _train(ENHANCE, run, "--resume", "--set", "model.options.hidden_dim=32") == 1
    err = _one_error_line(capsys)
    assert "model.options.hidden_dim: 16 in the checkpoint, 32 in the recipe" in err, err
    assert "size mismatch" not in err and f"--init {run} --run-dir NEW_DIR" in err, err
    grown = ["--init", str(run), "--set", "model.options.hidden_dim=32", "--max-steps", "1"]
    assert main(["train", str(ENHANCE), "--run-dir", str(tmp_path / "grown"), *grown]) == 0
    out, err = capsys.readouterr()  # stdout is the summary alone (JSON); the note of the growth is on stderr
    assert json.loads(out)["step"] == 1 and '"init_grown_to": {"hidden_dim": 32}' in err, (out, err)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_recipe_is_refused(tmp_path, capsys, text):
    """A recipe without keys (a truncated or new file) is one line, not a default codec run."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert _train(recipe, tmp_path / "run", "--max-steps", "1") == 1
    assert f"{recipe}: an empty recipe (no keys)" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_info_describes_a_training_checkpoint(tmp_path, capsys):
    """`audiokit info RUN/checkpoints/latest.pt` said "not a readable audio file"; it names the task,
    model and step, and how to go on. A non-checkpoint named .pt is still read as what it is."""
    run = tmp_path / "run"
    assert _train(BWE, run, "--max-steps", "2") == 0
    checkpoint = run / "checkpoints" / "latest.pt"
    capsys.readouterr()
    assert main(["info", str(checkpoint)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{checkpoint}: training checkpoint, task bwe, bwe-8to16 (step 2), "), line
    assert f"--run-dir {run} --resume` continues it" in line, line
    audio = tmp_path / "audio.pt"
    audio.write_bytes((SAMPLES / "speech_fr_16k_a.flac").read_bytes())
    assert main(["info", str(audio)]) == 0 and "16000 Hz, 1 ch" in capsys.readouterr().out


def test_resume_past_max_steps_says_there_is_nothing_to_train(tmp_path, capsys):
    """--max-steps is the step to stop at: --resume --max-steps 2 of a run at step 3 trained nothing and
    said nothing (exit 0); it says so, once, on stderr, and leaves the checkpoint as it was."""
    run = tmp_path / "run"
    assert _train(ENHANCE, run, "--max-steps", "3") == 0
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", str(ENHANCE), "--run-dir", str(run), "--resume", "--max-steps", "2"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 3
    assert f"{run} is at step 3, at or past the step to stop at (2: " in err and "nothing to train" in err
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before


def test_an_enhancers_validation_folder_of_plain_audio_is_not_offered_to_data_mix(tmp_path, capsys):
    """data.valid of an enhancer pointing at plain audio (samples/) said to make the set with
    `audiokit data mix --out samples`, a folder data mix refuses; it says what the folder lacks. An
    absent folder still gets the command that makes it."""
    assert _train(ENHANCE, tmp_path / "run", "--set", f"data.valid={SAMPLES}", "--max-steps", "1") == 1
    err = _one_error_line(capsys)
    assert f"data.valid: {SAMPLES} is not a noisy set (no clips.jsonl)" in err and "--out NEW_DIR" in err
    missing = tmp_path / "noisy_set"
    assert _train(ENHANCE, tmp_path / "run", "--set", f"data.valid={missing}", "--max-steps", "1") == 1
    assert f"make it with `audiokit data mix --out {missing}`" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_relative_data_path_that_is_not_there_names_the_folder_it_was_read_from(
    tmp_path, capsys, monkeypatch
):
    """A tiny recipe (data.train: samples) run from outside the checkout said only to prepare data."""
    monkeypatch.chdir(tmp_path)
    assert _train(BWE, tmp_path / "run", "--max-steps", "1") == 1
    err = _one_error_line(capsys)
    assert "data.train: 'samples' is neither an existing path" in err, err
    assert f"relative paths are read from {tmp_path}" in err and not (tmp_path / "run").exists()


def test_init_with_weights_of_another_size_names_the_options_that_differ(tmp_path, capsys):
    """--init of a run or checkpoint whose model config differs from the recipe's names the differing
    options and both values, not load_state_dict's missing keys and size mismatches."""
    assert _train(BWE, tmp_path / "small", "--max-steps", "1") == 0
    capsys.readouterr()
    for init in [tmp_path / "small", tmp_path / "small" / "checkpoints" / "latest.pt"]:
        assert _train(BWE, tmp_path / "run", "--init", str(init), "--set", "model.options.erb_bands=12") == 1
        err = _one_error_line(capsys)
        assert "(model.options.erb_bands: 8 in the weights, 12 in the recipe)" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "state",
    [
        {"model": {}, "step": 3, "recipe": {"task": "enhance", "model": "enhance-16k"}},
        {"model": {}, "step": 3, "recipe": "enhance"},
        {"model": {}},
    ],
)
def test_info_of_a_pt_file_that_holds_weights_but_no_run_is_one_line(tmp_path, capsys, state):
    """A .pt of weights not written by `audiokit train` (a recipe that is no mapping, no step) was an
    internal error ('str' object has no attribute 'get') or a line of Nones advising --resume."""
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    assert main(["info", str(path)]) == 1
    assert f"{path}: not an audiokit training checkpoint" in _one_error_line(capsys)


def test_a_step_out_of_memory_is_one_line_naming_the_batch(tmp_path):
    """A batch too large for the memory: the allocator's failure (here under an address-space limit, in a
    process of its own) is one line naming the run, the batch size and the way out, not an internal
    error; run.json records why the session ended."""
    import subprocess
    import sys

    script = (
        "import resource, sys, torch\n"
        "from audiokit.cli import main\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, used + 2**30))\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = tmp_path / "run"
    args = ["train", str(ENHANCE), "--run-dir", str(run), "-q", "--max-steps", "2"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args, "--set", "data.batch_size=512"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    err = done.stderr.strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"audiokit train: error: {run}: out of memory in step 1 on cpu (tried to allocate ")
    assert "data.batch_size=512" in err and err.endswith("nothing was saved"), err
    assert json.loads((run / "run.json").read_text())["sessions"][-1]["stopped"] == "out of memory"


def test_a_batch_too_large_to_draw_is_the_same_one_line(tmp_path, capsys):
    """A crop no memory holds (``data.segment_seconds=1e9``: numpy's MemoryError while drawing the batch)
    was "internal error: MemoryError ..." (exit 70); now it is the out-of-memory line of a step."""
    run = tmp_path / "run"
    assert (
        _train(BWE, run, "--max-steps", "1", f"--set=data.train={SAMPLES}", "--set=data.segment_seconds=1e9")
        == 1
    )
    err = _one_error_line(capsys)
    assert err.startswith(
        f"audiokit train: error: {run}: out of memory in step 1 on cpu (tried to allocate "
    ), err
    assert "data.segment_seconds=1e+09" in err and err.endswith("nothing was saved"), err
    assert json.loads((run / "run.json").read_text())["sessions"][-1]["stopped"] == "out of memory"


def test_what_a_failed_allocation_tried_to_get():
    from audiokit.train.trainer import out_of_memory

    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity")
    cpu = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 66576384 bytes.")
    assert out_of_memory(gpu) == "tried to allocate 2.00 GiB"
    assert out_of_memory(cpu) == "tried to allocate 63.5 MiB"
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    numpy = MemoryError("Unable to allocate 58.2 TiB for an array with shape (1, 16000000000000)")
    assert out_of_memory(numpy) == "tried to allocate 58.2 TiB"
    assert out_of_memory(MemoryError()) == "an allocation failed"
