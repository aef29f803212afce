"""The training loop end to end on samples/: tiny recipe, exact resume, fine-tuning init."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors

from audiokit.cli import main
from audiokit.errors import RecipeError, TrainingError, UsageError
from audiokit.models import Codec
from audiokit.train import portable
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.recipe import load_recipe
from audiokit.train.signals import StopSignals
from audiokit.train.trainer import MAX_SKIPPED_UPDATES, Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "codec_speech16k_tiny.yaml"


def _recipe(*overrides: str):
    base = [f"data.train={ROOT / 'samples'}", f"data.valid={ROOT / 'samples'}"]
    return load_recipe(TINY, base + list(overrides))


def test_tiny_recipe_trains_checkpoints_and_evaluates(tmp_path):
    recipe = _recipe()
    trainer = Trainer(recipe, tmp_path / "run", quiet=True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    trainer.close()
    assert result.step == recipe.run.max_steps == 8
    # every generator loss term, the discriminator and the balancer took part
    for key in ("loss/mel", "loss/stft", "loss/adversarial", "loss/feature_matching", "loss/discriminator"):
        assert key in result.losses and torch.isfinite(torch.tensor(result.losses[key]))
    assert "balancer/ratio_mel" in result.losses
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # evaluation at each bitrate, every 4 steps
    assert [e["step"] for e in result.evaluations] == [4, 8]
    for evaluation in result.evaluations:
        assert set(evaluation["bitrates"]) == {"400", "800"}
        for scores in evaluation["bitrates"].values():
            assert 0.9 < scores["pesq"] < 4.7 and 0.0 <= scores["stoi"] <= 1.0 and scores["mel_distance"] > 0
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8]
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["sessions"][0]["versions"]["torch"] == torch.__version__
    assert info["sessions"][0]["commit"] != "unknown"
    assert load_recipe(run / "recipe.yaml") == recipe
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["step"] == 8 and state["data"]["next_step"] == 8
    assert {"generator", "discriminator"} <= set(state["optimizers"]) and state["balancer"]["sums"]
    assert (run / "model.safetensors").is_file()


RESUME_OVERRIDES = [
    "data.valid=null",
    "data.segment_seconds=0.25",
    "run.tensorboard=false",
    "run.max_steps=10",
    "schedule.total_steps=10",
    "discriminator.start_step=3",
    "discriminator.update_every=2",
]


def _assert_same_training_state(a_dir: Path, b_dir: Path) -> None:
    a = load_checkpoint(a_dir / "checkpoints" / "latest.pt")
    b = load_checkpoint(b_dir / "checkpoints" / "latest.pt")
    for key in ("model", "ema", "discriminator", "optimizers"):
        assert_same_tensors(a[key], b[key], key)
    assert a["balancer"] == b["balancer"] and a["schedulers"] == b["schedulers"]


def test_the_pesq_style_term_trains_the_codec_through_the_balancer(tmp_path):
    """`losses.pesq_style` (PESQ's disturbance, as the enhancer's recipe has it) is one of the balanced
    generator terms: logged, given its share, and the weights differ from the same run without it."""
    weights = []
    for name, value in (("with", "5.0"), ("without", "0.0")):
        recipe = _recipe(f"losses.pesq_style={value}", "run.max_steps=2", "eval.every_steps=100")
        trainer = Trainer(recipe, tmp_path / name, quiet=True)
        result = trainer.fit()
        trainer.close()
        weights.append(trainer.model.state_dict())
        assert ("loss/pesq_style" in result.losses) == (name == "with")
        assert ("balancer/ratio_pesq_style" in result.losses) == (name == "with")
    decoder = [k for k in weights[0] if k.startswith("decoder.")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in decoder)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_bit_exactly(tmp_path, workers):
    # 10 steps in one go == 5 steps, a new process-like Trainer resuming, then 5 more; with data loader
    # workers too (their base seed was drawn from torch's global generator at every start)
    overrides = [*RESUME_OVERRIDES, f"data.num_workers={workers}"]
    straight = Trainer(_recipe(*overrides), tmp_path / "straight", quiet=True)
    straight.fit()
    first = Trainer(_recipe(*overrides), tmp_path / "split", quiet=True)
    assert first.fit(max_steps=5).step == 5
    del first
    second = Trainer(_recipe(*overrides), tmp_path / "split", resume=True, quiet=True)
    assert second.step == 5
    assert second.fit().step == 10
    _assert_same_training_state(tmp_path / "straight", tmp_path / "split")
    assert len(json.loads((tmp_path / "split" / "run.json").read_text())["sessions"]) == 2


def test_cooldown_and_rate_set_on_resume_take_effect(tmp_path):
    # a run resumed with schedule.cooldown_start falls linearly from the cosine rate at that step to
    # min_lr_ratio, and from a new base rate, although the restored scheduler knew neither
    overrides = [*RESUME_OVERRIDES, "schedule.total_steps=100", "schedule.min_lr_ratio=0.1"]
    Trainer(_recipe(*overrides), tmp_path, quiet=True).fit(max_steps=4)
    cooled = [*overrides, "schedule.cooldown_start=4", "schedule.cooldown_steps=4"]
    cooled.append("optim.learning_rate=2.5e-4")
    trainer = Trainer(_recipe(*cooled), tmp_path, resume=True, quiet=True)
    recipe = trainer.recipe
    warmup, base = recipe.schedule.warmup_steps, recipe.optim.learning_rate
    assert base == 2.5e-4 != load_recipe(TINY).optim.learning_rate
    at_start = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (4 - warmup) / (100 - warmup)))
    rates = []
    for step in (5, 6, 8, 9):
        trainer.fit(max_steps=step)
        rates.append(trainer.model_part.optimizer.param_groups[0]["lr"])
    expected = [base * (at_start + (0.1 - at_start) * min(1, (s - 4) / 4)) for s in (5, 6, 8, 9)]
    assert rates == pytest.approx(expected, rel=1e-9)
    assert expected[0] > 0.5 * base and expected[-1] == pytest.approx(0.1 * base)


def test_discriminators_warm_up_before_the_generator_feels_them(tmp_path):
    overrides = [*RESUME_OVERRIDES, "run.log_every=1", "discriminator.update_every=1"]
    overrides += ["discriminator.start_step=2", "discriminator.warmup_steps=2"]
    Trainer(_recipe(*overrides), tmp_path, quiet=True).fit(max_steps=6)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # logged after steps 1..6, i.e. steps 0..5 ran: discriminators from step 2, the generator's
    # adversarial and feature-matching losses from step 4
    assert ["loss/discriminator" in row for row in rows] == [False, False, True, True, True, True]
    assert ["loss/adversarial" in row for row in rows] == [False, False, False, False, True, True]
    assert ["loss/feature_matching" in row for row in rows] == [False, False, False, False, True, True]


def test_resume_may_change_discriminators_that_have_not_started(tmp_path):
    overrides = [*RESUME_OVERRIDES, "discriminator.start_step=4"]
    Trainer(_recipe(*overrides), tmp_path / "early", quiet=True).fit(max_steps=4)
    narrow = ["discriminator.kinds=[mpd]", "discriminator.options={mpd: {widths: [4, 8, 8, 8, 8]}}"]
    trainer = Trainer(_recipe(*overrides, *narrow), tmp_path / "early", resume=True, quiet=True)
    assert trainer.fit(max_steps=6).step == 6
    state = load_checkpoint(tmp_path / "early" / "checkpoints" / "latest.pt")
    assert all(key.startswith("discriminators.0.") for key in state["discriminator"])
    # once they have trained, their state must fit
    with pytest.raises(UsageError, match="does not fit this recipe"):
        Trainer(_recipe(*overrides), tmp_path / "early", resume=True, quiet=True)


def test_packed_training_state_resumes_bit_exactly_elsewhere(tmp_path):
    # 5 steps, `audiokit checkpoint pack` into shards of <= 1 MiB, unpack into a new run directory,
    # resume there for 5 more: the same state as 10 steps in one go
    Trainer(_recipe(*RESUME_OVERRIDES), tmp_path / "straight", quiet=True).fit()
    Trainer(_recipe(*RESUME_OVERRIDES), tmp_path / "first", quiet=True).fit(max_steps=5)
    packed, moved = tmp_path / "packed", tmp_path / "moved"
    assert main(["checkpoint", "pack", str(tmp_path / "first"), str(packed), "--max-shard-mb", "1"]) == 0
    shards = sorted(packed.glob("state-*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 2**20 for p in shards)
    # the limit holds with the files' headers too (small shards hold many tensors: a 31 KB header)
    small = tmp_path / "small"
    assert (
        main(["checkpoint", "pack", str(tmp_path / "first"), str(small), "--max-shard-mb", "0.2", "-q"]) == 0
    )
    assert all(p.stat().st_size <= 0.2 * 2**20 for p in small.glob("state-*.safetensors"))
    assert {"run.json", "recipe.yaml", "metrics.jsonl", "state.json"} <= {p.name for p in packed.iterdir()}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in packed.iterdir()}  # shards as readable as the rest
    assert modes == {stat.S_IMODE((packed / "state.json").stat().st_mode)}
    assert main(["checkpoint", "unpack", str(packed), str(moved)]) == 0
    # the EMA weights as the trainer wrote them at step 5: the unpacked run is a model path at once
    weights = (moved / "model.safetensors").read_bytes()
    assert weights == (tmp_path / "first" / "model.safetensors").read_bytes()
    assert json.loads((moved / "model.json").read_text())["step"] == 5
    resumed = Trainer(_recipe(*RESUME_OVERRIDES), moved, resume=True, quiet=True)
    assert resumed.step == 5 and resumed.fit().step == 10
    _assert_same_training_state(tmp_path / "straight", moved)
    assert len(json.loads((moved / "run.json").read_text())["sessions"]) == 2


def test_unpack_refuses_a_damaged_pack_and_an_occupied_run(tmp_path, capsys):
    Trainer(_recipe(*RESUME_OVERRIDES), tmp_path / "run", quiet=True).fit(max_steps=1)
    packed = tmp_path / "packed"
    main(["checkpoint", "pack", str(tmp_path / "run"), str(packed), "-q"])
    assert main(["checkpoint", "unpack", str(packed), str(tmp_path / "run")]) == 1
    assert "already exists" in capsys.readouterr().err
    shard = packed / "state-00.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(["checkpoint", "unpack", str(packed), str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "unreadable packed training state" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other" / "checkpoints" / "latest.pt").exists()
    # a run directory that holds a run's records (a run that stopped before its first checkpoint)
    main(["checkpoint", "pack", str(tmp_path / "run"), str(tmp_path / "good"), "-q"])
    started = tmp_path / "started"
    started.mkdir()
    (started / "metrics.jsonl").write_text('{"step": 1}\n')
    assert main(["checkpoint", "unpack", str(tmp_path / "good"), str(started)]) == 1
    assert "metrics.jsonl: already exists" in capsys.readouterr().err
    assert (started / "metrics.jsonl").read_text() == '{"step": 1}\n' and not (started / "run.json").exists()


def test_an_interrupted_unpack_can_be_run_again(tmp_path, monkeypatch):
    """The records were copied before the checkpoint: an unpack stopped in between left them, and
    every later unpack into that run directory was refused ('run.json: already exists')."""
    Trainer(_recipe(*RESUME_OVERRIDES), tmp_path / "run", quiet=True).fit(max_steps=1)
    packed, moved = tmp_path / "packed", tmp_path / "moved"
    assert main(["checkpoint", "pack", str(tmp_path / "run"), str(packed), "-q"]) == 0

    def interrupted(path, state):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(portable, "save_checkpoint", interrupted)
        assert main(["checkpoint", "unpack", str(packed), str(moved)]) == 130
    assert not any(moved.rglob("*"))
    assert main(["checkpoint", "unpack", str(packed), str(moved)]) == 0
    assert (moved / "run.json").is_file() and (moved / "checkpoints" / "latest.pt").is_file()


def test_run_dir_with_checkpoint_needs_resume(tmp_path):
    overrides = ["data.valid=null", "run.tensorboard=false", "run.max_steps=1", "discriminator.kinds=[]"]
    Trainer(_recipe(*overrides), tmp_path, quiet=True).fit()
    with pytest.raises(UsageError, match="--resume"):
        Trainer(_recipe(*overrides), tmp_path, quiet=True)
    with pytest.raises(UsageError, match="nothing to resume"):
        Trainer(_recipe(*overrides), tmp_path / "empty", resume=True, quiet=True)


def test_init_fine_tunes_from_checkpoint_weights(tmp_path):
    overrides = ["data.valid=null", "run.tensorboard=false", "run.max_steps=2", "discriminator.kinds=[]"]
    Trainer(_recipe(*overrides), tmp_path / "a", quiet=True).fit()
    source = load_checkpoint(tmp_path / "a" / "checkpoints" / "latest.pt")
    tuned = Trainer(
        _recipe(*overrides, "run.seed=5"), tmp_path / "b", init=tmp_path / "a" / "checkpoints" / "latest.pt"
    )
    assert tuned.step == 0
    assert_same_tensors(tuned.model.state_dict(), source["ema"]["module"])
    # run.json names the weights it started from and their sha256 (the model card follows it)
    session = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"][0]
    saved = json.loads((tmp_path / "a" / "model.json").read_text())
    assert session["init_sha256"] == saved["sha256"] == tuned.model.weights_sha256()
    mismatched = _recipe(*overrides, "model.options.latent_dim=8")
    with pytest.raises(UsageError, match="do not fit"):
        Trainer(mismatched, tmp_path / "c", init=tmp_path / "a" / "model.safetensors")
    # a recipe with a larger decoder grows the weights, so the run starts from the same function
    larger = "model.options.decoder={intermediate_dim: 96, n_blocks: 2}"  # merged into the recipe's
    init = tmp_path / "a" / "model.safetensors"
    grown = Trainer(_recipe(*overrides, larger), tmp_path / "d", init=init, quiet=True)
    assert len(grown.model.decoder.blocks) == 2
    # run.json names the weights as read (a model card of them continues the record) and the growth
    session = json.loads((tmp_path / "d" / "run.json").read_text())["sessions"][0]
    assert session["init_sha256"] == saved["sha256"]
    assert session["init_grown_to"]["intermediate_dim"] == 96
    audio = torch.randn(1, 1, 3200) * 0.2
    with torch.no_grad():
        expected = tuned.model.decode(tuned.model.encode(audio))
        torch.testing.assert_close(grown.model.decode(grown.model.encode(audio)), expected, rtol=0, atol=1e-6)


def test_frozen_encoder_and_codebooks_keep_the_codes_while_the_decoder_trains(tmp_path):
    overrides = ["data.valid=null", "run.tensorboard=false", "run.max_steps=2", "discriminator.kinds=[]"]
    Trainer(_recipe(*overrides), tmp_path / "a", quiet=True).fit()
    init = tmp_path / "a" / "model.safetensors"
    frozen = ["optim.frozen=[encoder, quantizer.quantizers]", "run.max_steps=4", "schedule.total_steps=4"]
    trainer = Trainer(_recipe(*overrides, *frozen), tmp_path / "b", init=init, quiet=True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    trainer.close()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")
    for weights in (state["model"], state["ema"]["module"]):
        kept = {k: v for k, v in weights.items() if k.startswith(("encoder.", "quantizer."))}
        assert kept and all(torch.equal(before[k], v) for k, v in kept.items())  # codebooks too
        assert any(not torch.equal(before[k], v) for k, v in weights.items() if k.startswith("decoder."))
    optimised = state["optimizer_parameters"]["generator"]
    assert optimised and not any(n.startswith(("encoder.", "quantizer.")) for n in optimised)
    # the run resumes with the same frozen parts
    resumed = Trainer(
        _recipe(*overrides, *frozen, "run.max_steps=6"), tmp_path / "b", resume=True, quiet=True
    )
    resumed.fit()
    resumed.close()
    after = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    with pytest.raises(RecipeError, match="no submodule 'encodr'"):
        Trainer(_recipe(*overrides, "optim.frozen=[encodr]"), tmp_path / "c", quiet=True)


def _trainer_from_trained_weights(tmp_path: Path, extra: list[str]) -> tuple[Trainer, dict, Path]:
    """A trainer of the tiny recipe with ``extra`` overrides, ``--init`` from weights the plain recipe
    trained for 2 steps: the trainer, its first session record (``run.json``) and the weights' path."""
    overrides = ["data.valid=null", "run.tensorboard=false", "run.max_steps=2", "discriminator.kinds=[]"]
    Trainer(_recipe(*overrides), tmp_path / "a", quiet=True).fit()
    init = tmp_path / "a" / "model.safetensors"
    trainer = Trainer(_recipe(*overrides, *extra), tmp_path / "b", init=init, quiet=True)
    session = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"][0]
    return trainer, session, init


def test_init_adds_rate_conditioning_which_trains_beside_frozen_codes(tmp_path):
    conditioned = [
        "model.options.rate_conditioned=true",
        "model.options.quantizer_dropout=1.0",
        "model.options.quantizer_dropout_choices=[1, 3]",
        "optim.frozen=[encoder, quantizer.quantizers]",
        "optim.lr_scales={rate_: 50}",
        "run.max_steps=3",
        "schedule.total_steps=3",
    ]
    trainer, session, init = _trainer_from_trained_weights(tmp_path, conditioned)
    assert session["init_rate_conditioned"] is True
    plain = Codec.from_pretrained(init).eval()
    audio = torch.randn(1, 1, 3200) * 0.2
    with torch.no_grad():  # it starts as the weights it was given
        codes = plain.encode(audio, 600)
        torch.testing.assert_close(trainer.model.eval().decode(codes), plain.decode(codes), rtol=0, atol=1e-6)
    trainer.model.train()
    trainer.fit()
    trainer.close()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")
    moved = (state["model"]["rate_scale"] != 1).any(1).tolist()
    assert moved == [True, False, True, False]  # the drawn rates' vectors trained, no other
    # at 50x the decoder's rate (optim.lr_scales), in a group of their own
    names = state["optimizer_parameters"][trainer.model_part.role]
    groups = state["optimizers"][trainer.model_part.role]["param_groups"]
    rates = {names[i]: group["initial_lr"] for group in groups for i in group["params"]}
    assert (
        rates["rate_scale"] == rates["rate_shift"] == pytest.approx(50 * trainer.recipe.optim.learning_rate)
    )
    others = [rate for name, rate in rates.items() if not name.startswith("rate_")]
    assert others == pytest.approx([trainer.recipe.optim.learning_rate] * len(others))


def test_max_minutes_stops_the_session_and_still_checkpoints(tmp_path):
    overrides = ["data.valid=null", "run.tensorboard=false", "discriminator.kinds=[]"]
    result = Trainer(_recipe(*overrides), tmp_path, quiet=True).fit(max_minutes=0.0)
    assert (result.step, result.stopped) == (0, "max_minutes")
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 0


def test_a_run_whose_gradients_stay_nan_stops_as_diverged(tmp_path, capsys):
    """A model that only yields NaN gradients keeps its weights (each update dropped, said once on
    stderr) and the run stops with a one-line TrainingError after MAX_SKIPPED_UPDATES steps, its session
    recorded as diverged."""
    overrides = ["data.valid=null", "run.tensorboard=false", "discriminator.kinds=[]", "run.max_steps=100"]
    trainer = Trainer(_recipe(*overrides), tmp_path, quiet=True)
    first = next(p for p in trainer.model.decoder.parameters() if p.requires_grad)
    with torch.no_grad():
        first.view(-1)[0] = math.nan
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}  # (codebook EMAs move in forward)
    diverged = f"step {MAX_SKIPPED_UPDATES}: the generator's gradients were not finite"
    with pytest.raises(TrainingError, match=diverged):
        trainer.fit()
    trainer.close()
    after = dict(trainer.model.named_parameters())
    torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)
    assert capsys.readouterr().err.count("update is skipped") == 1
    session = json.loads((tmp_path / "run.json").read_text())["sessions"][-1]
    assert (session["stopped"], session["end_step"]) == ("diverged", MAX_SKIPPED_UPDATES - 1)


@pytest.mark.gpu
def test_cuda_bf16_autocast_trains(tmp_path):
    recipe = _recipe("data.valid=null", "run.tensorboard=false", "run.device=cuda", "run.max_steps=3")
    trainer = Trainer(recipe, tmp_path, quiet=True)
    result = trainer.fit()
    assert result.step == 3 and trainer.runtime.device.type == "cuda"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.losses.items() if k.startswith("loss/"))


def test_cli_trains_then_resumes(tmp_path, capsys):
    import argparse

    from audiokit.cli import train as train_cli

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true")
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command"), common)
    base = ["train", str(TINY), "--run-dir", str(tmp_path), "--set", f"data.train={ROOT / 'samples'}"]
    base += ["--set", "data.valid=null", "--set", "run.tensorboard=false", "--set", "discriminator.kinds=[]"]
    args = parser.parse_args([*base, "--max-steps", "1", "-q"])
    assert args.handler(args) == 0
    args = parser.parse_args([*base, "--max-steps", "2", "--resume"])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    args = parser.parse_args([*base, "--resume", "--init", "x.pt"])
    with pytest.raises(UsageError, match="cannot be used together"):
        args.handler(args)


def test_a_signal_during_an_evaluation_drops_it_at_once(tmp_path):
    """Ctrl-C while the validation clips are scored stops now, not after the evaluation's minutes: the
    evaluation at step 2 signals itself at its start, then would score every clip."""
    trainer = Trainer(
        _recipe("run.tensorboard=false", "eval.every_steps=2", "run.max_steps=6"), tmp_path, quiet=True
    )
    evaluate, scored = trainer.task.evaluate, []

    def signalled_evaluation(model, clips):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        result = evaluate(model, clips)
        scored.append(trainer.step)
        return result

    trainer.task.evaluate = signalled_evaluation
    handler = signal.getsignal(signal.SIGINT)  # pytest-xdist's workers ignore SIGINT
    result = trainer.fit()
    trainer.close()
    assert result.stopped == "SIGINT" and result.step == 2 and scored == [] and result.evaluations == []
    assert not (tmp_path / "eval.jsonl").exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2
    assert signal.getsignal(signal.SIGINT) == handler  # restored after the session


def test_a_signal_during_the_final_evaluation_is_the_sessions_stop_reason(tmp_path):
    trainer = Trainer(_recipe("run.tensorboard=false", "run.max_steps=3"), tmp_path, quiet=True)
    evaluate = trainer.task.evaluate

    def signalled_evaluation(model, clips):
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate(model, clips)

    trainer.task.evaluate = signalled_evaluation
    result = trainer.fit()
    trainer.close()
    assert result.stopped == "SIGINT" and result.step == 3 and not (tmp_path / "eval.jsonl").exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 3
    # the stop message says "continue with --resume": that session has no step left, and evaluates
    resumed = Trainer(_recipe("run.tensorboard=false", "run.max_steps=3"), tmp_path, resume=True, quiet=True)
    result = resumed.fit()
    resumed.close()
    assert result.step == 3 and [e["step"] for e in result.evaluations] == [3]
    assert [json.loads(line)["step"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()] == [3]
    again = Trainer(_recipe("run.tensorboard=false", "run.max_steps=3"), tmp_path, resume=True, quiet=True)
    assert again.fit().evaluations == []  # evaluated once, not at every resume
    again.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_the_session_with_a_checkpoint_that_resumes(tmp_path, signum):
    """A real `audiokit train` process: SIGTERM mid-run saves the step it reached and records it; so
    does SIGHUP (a closed terminal), which killed the process, losing every step since the last
    checkpoint."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "audiokit", "train", str(TINY), "--run-dir", str(run), "-q"]
    command += ["--set", f"data.train={ROOT / 'samples'}", "--set", f"data.valid={ROOT / 'samples'}"]
    command += ["--set", "run.tensorboard=false", "--set", "run.checkpoint_every=1000"]
    command += ["--set", "run.log_every=1", "--set", "eval.every_steps=1000", "--max-steps", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # as from a terminal: a run started under nohup (this test's too, perhaps) inherits an ignored SIGHUP,
    # which the trainer rightly keeps ignoring
    def from_a_terminal() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=from_a_terminal
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    session = json.loads((run / "run.json").read_text())["sessions"][-1]
    assert session["stopped"] == signum.name and session["end_step"] >= 3
    assert f"stopped by {signum.name} at step {session['end_step']}" in stderr and "Traceback" not in stderr
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == session["end_step"]
    assert not (run / "eval.jsonl").exists()  # no evaluation on the way out

    end = session["end_step"]
    resumed = Trainer(_recipe("run.tensorboard=false", "data.valid=null"), run, resume=True, quiet=True)
    assert resumed.step == end and resumed.fit(max_steps=end + 1).step == end + 1


def test_a_hangup_under_nohup_is_still_ignored():
    """Under `nohup` (SIGHUP ignored) training must go on after the terminal closes: the stop signals
    leave an ignored SIGHUP ignored, and take it over otherwise."""
    reached = []

    def terminal_closed(signum, frame):  # in place of the default action (which would end pytest)
        reached.append(signum)

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.signal(signal.SIGHUP, terminal_closed)
        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)  # a closed terminal sends two: the shell's, the kernel's
        assert signals.received == "SIGHUP" and not reached
        assert signal.getsignal(signal.SIGHUP) is terminal_closed
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_init_adds_rate_decoders_which_train_alone_beside_the_frozen_shared_one(tmp_path):
    own = [
        "model.options.rate_decoders=[1, 3]",
        "model.options.quantizer_dropout=1.0",
        "model.options.quantizer_dropout_choices=[1, 3]",
        "optim.frozen=[encoder, quantizer.quantizers, decoder]",
        "run.max_steps=3",
        "schedule.total_steps=3",
    ]
    trainer, session, init = _trainer_from_trained_weights(tmp_path, own)
    assert session["init_rate_decoders"] == [1, 3]
    plain = Codec.from_pretrained(init).eval()
    audio = torch.randn(1, 1, 3200) * 0.2
    with torch.no_grad():  # it starts as the weights it was given, at every rate
        for bitrate in (200, 400, 600):  # 1, 2 and 3 codebooks
            codes = plain.encode(audio, bitrate)
            assert torch.equal(trainer.model.eval().decode(codes), plain.decode(codes))
    trainer.model.train()
    trainer.fit()
    trainer.close()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")["model"]
    before = plain.state_dict()
    for prefix in ("rate_decoders.1.", "rate_decoders.3."):  # each trained on the items of its rate
        shared = {k: "decoder." + k.removeprefix(prefix) for k in state if k.startswith(prefix)}
        moved = [k for k, v in shared.items() if not torch.equal(state[k], before[v])]
        assert moved, prefix
    assert all(torch.equal(before[k], v) for k, v in state.items() if not k.startswith("rate_decoders."))
    trained = Codec.from_pretrained(tmp_path / "b" / "model.safetensors").eval()
    with torch.no_grad():  # the shared decoder still serves the other rates exactly
        codes = plain.encode(audio, 400)
        assert torch.equal(trained.decode(codes), plain.decode(codes))
