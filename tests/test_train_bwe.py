"""The bandwidth extender's adversarial terms: warm-up, discriminator updates, exact resume, forks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors

from audiokit.cli import main
from audiokit.train.adversarial import build_discriminator
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.recipe import load_recipe
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "bwe_8to16_tiny.yaml"
BASE = ["data.valid=null", "data.segment_seconds=0.25", "run.log_every=1", "run.threads=1"]
# narrow MPD and MRD, from step 2, the generator's terms from step 4
SMALL = "{mpd: {periods: [2, 3], widths: [4, 8, 8, 8, 8]}, mrd: {filters: 4, window_lengths: [512, 256]}}"
ADVERSARIAL = [
    "discriminator.kinds=[mpd, mrd]",
    f"discriminator.options={SMALL}",
    "discriminator.start_step=2",
    "discriminator.warmup_steps=2",
    "optim.disc_learning_rate=1e-3",
]


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny recipe names samples/ relative to the repository


def _recipe(*overrides: str):
    return load_recipe(TINY, [*BASE, *overrides])


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k.startswith(("loss/", "grad_norm/"))} for row in _rows(run_dir)]


def _disc_updates(run_dir: Path) -> int:
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")["schedulers"]["discriminator"]["last_epoch"]


def test_discriminators_warm_up_then_shape_the_extender(tmp_path):
    with_d = Trainer(_recipe(*ADVERSARIAL), tmp_path / "adversarial", quiet=True)
    without = Trainer(_recipe(), tmp_path / "plain", quiet=True)
    discriminator = with_d.task.adversary.module
    initial = {k: v.detach().clone() for k, v in discriminator.named_parameters()}
    for trainer in (with_d, without):
        trainer.fit(max_steps=4)
    # during the warm-up the extender trains exactly as without discriminators
    assert_same_tensors(with_d.model.state_dict(), without.model.state_dict(), "model at step 4")
    for trainer in (with_d, without):
        trainer.fit(max_steps=6)
    # logged after steps 1..6, i.e. steps 0..5 ran: discriminators from step 2, the generator's
    # adversarial and feature-matching losses from step 4
    rows = _rows(tmp_path / "adversarial")
    assert ["loss/discriminator" in row for row in rows] == [False, False, True, True, True, True]
    for name in ("loss/adversarial", "loss/feature_matching"):
        assert [name in row for row in rows] == [False, False, False, False, True, True]
        assert all(row[name] > 0 for row in rows[4:])
    assert not any("loss/discriminator" in row for row in _rows(tmp_path / "plain"))
    # the discriminators learnt, and their terms changed the extender's update
    assert all(not torch.equal(initial[k], v) for k, v in discriminator.named_parameters())
    a, b = with_d.model.state_dict(), without.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / "adversarial" / "checkpoints" / "latest.pt")
    assert set(state["optimizers"]) == {"model", "discriminator"}
    assert _disc_updates(tmp_path / "adversarial") == 4
    assert_same_tensors(state["discriminator"], discriminator.state_dict(), "discriminator")
    plain = load_checkpoint(tmp_path / "plain" / "checkpoints" / "latest.pt")
    assert set(plain["optimizers"]) == {"model"} and "discriminator" not in plain  # as before they existed


def test_resume_with_discriminators_continues_exactly(tmp_path):
    # 6 steps in one go == 3 steps (mid warm-up), a new Trainer resuming, then 3 more
    overrides = [*ADVERSARIAL, "discriminator.update_every=2", "run.max_steps=6", "schedule.total_steps=6"]
    Trainer(_recipe(*overrides), tmp_path / "straight", quiet=True).fit()
    Trainer(_recipe(*overrides), tmp_path / "split", quiet=True).fit(max_steps=3)
    resumed = Trainer(_recipe(*overrides), tmp_path / "split", resume=True, quiet=True)
    assert resumed.step == 3 and resumed.fit().step == 6
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in ("model", "ema", "discriminator", "optimizers"):
        assert_same_tensors(a[key], b[key], key)
    assert a["schedulers"] == b["schedulers"]
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
    assert "loss/adversarial" in _losses(tmp_path / "split")[-1]


def test_a_run_without_discriminators_forks_with_them(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", str(TINY), "--run-dir", str(run), "-q"]
    for override in BASE:
        base += ["--set", override]
    assert main([*base, "--max-steps", "3"]) == 0
    fork = ADVERSARIAL[:2] + ["discriminator.start_step=3", "discriminator.warmup_steps=2"]
    args = [arg for override in fork for arg in ("--set", override)]
    assert main([*base, "--resume", *args, "--max-steps", "7"]) == 0
    rows = _rows(run)
    assert [row["step"] for row in rows] == list(range(1, 8))
    # fresh discriminators from the resumed step 3; the generator's terms after their warm-up (step 5)
    assert ["loss/discriminator" in row for row in rows] == [False] * 3 + [True] * 4
    assert ["loss/adversarial" in row for row in rows] == [False] * 5 + [True] * 2
    assert _disc_updates(run) == 4
    # and the fork resumes in turn with its discriminators
    assert main([*base, "--resume", *args, "--max-steps", "8"]) == 0
    assert _disc_updates(run) == 5


def test_the_adversarial_recipe_is_the_base_recipe_plus_discriminators():
    base = load_recipe(ROOT / "recipes" / "bwe_8to16.yaml")
    adversarial = load_recipe(ROOT / "recipes" / "bwe_8to16_adversarial.yaml")
    assert base.discriminator.kinds == [] and sorted(adversarial.discriminator.kinds) == ["mpd", "mrd"]
    losses = ("adversarial", "feature_matching", "adversarial_kind")
    same_losses = {k: getattr(base.losses, k) for k in losses}
    same_optim = {k: getattr(base.optim, k) for k in ("disc_learning_rate", "disc_betas", "disc_grad_clip")}
    aligned = dataclasses.replace(
        adversarial,
        losses=dataclasses.replace(adversarial.losses, **same_losses),
        optim=dataclasses.replace(adversarial.optim, **same_optim),
        discriminator=base.discriminator,
    )
    assert aligned == base
    assert build_discriminator(adversarial.discriminator, 1) is not None


def test_the_conservative_recipe_is_the_base_recipe_plus_the_excess_term():
    base = load_recipe(ROOT / "recipes" / "bwe_8to16.yaml")
    conservative = load_recipe(ROOT / "recipes" / "bwe_8to16_conservative.yaml")
    assert conservative.losses.compressed_magnitude > 0 and conservative.losses.excess_weight > 1
    same = {k: getattr(base.losses, k) for k in ("compressed_magnitude", "excess_weight")}
    assert dataclasses.replace(conservative, losses=dataclasses.replace(conservative.losses, **same)) == base


def test_excess_weight_charges_a_louder_made_band_more(tmp_path):
    """The compressed-magnitude term with ``excess_weight`` reads the same first output as without it,
    and costs more by at most the weight (only its louder-than-reference cells are weighted)."""
    first = {}
    for weight in (1.0, 6.0):
        run_dir = tmp_path / f"w{weight}"
        recipe = _recipe(
            "losses.compressed_magnitude=1.0", f"losses.excess_weight={weight}", "run.max_steps=1"
        )
        Trainer(recipe, run_dir, quiet=True).fit()
        first[weight] = _rows(run_dir)[0]["loss/compressed_magnitude"]
    assert first[1.0] < first[6.0] < 6.0 * first[1.0]
    with pytest.raises(Exception, match="excess_weight"):
        _recipe("losses.excess_weight=0")
