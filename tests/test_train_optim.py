"""Optimiser state across code changes: moments follow parameters by name, and the committed training
states (``checkpoints/*``) still resume with the current models."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.optim import (
    load_optimizer_state,
    lr_factor,
    make_part,
    parameter_names,
    registration_names,
)
from audiokit.train.portable import unpack_run
from audiokit.train.recipe import ScheduleConfig, recipe_from_dict
from audiokit.train.task import build_model, task_class

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_STATES = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/state.json"))


class Net(nn.Module):
    """Three layers registered in the given order; ``slow`` trains at a tenth of the rate."""

    def __init__(self, order: tuple[str, ...]) -> None:
        super().__init__()
        sizes = {"first": (4, 6), "slow": (6, 6), "last": (6, 2)}
        for name in order:
            setattr(self, name, nn.Linear(*sizes[name]))

    def lr_scales(self) -> dict[str, float]:
        return {"slow.weight": 0.1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.slow(torch.tanh(self.first(x)))))


def _part(net: Net, prefix_scales: dict[str, float] | None = None):
    factor = lr_factor(ScheduleConfig(warmup_steps=2, decay="constant"), 100)
    # no clipping (it sums in order)
    return make_part("generator", net, net, 1e-2, [0.9, 0.99], factor, 0.0, prefix_scales=prefix_scales)


def _train(part, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=generator)
        part.module(x).square().mean().backward()
        part.update()


def test_an_update_of_gradients_that_are_not_finite_is_dropped():
    """A NaN gradient would make every weight NaN in one AdamW step; the part drops it, keeps the
    weights and the optimiser's moments, moves the schedule on and counts the updates skipped in a row."""
    torch.manual_seed(0)
    part = _part(Net(("first", "slow", "last")))
    _train(part, 2, seed=1)
    weights = copy.deepcopy(part.module.state_dict())
    moments = copy.deepcopy(part.optimizer.state_dict()["state"])
    for bad in (math.nan, math.inf):
        part.module(torch.full((8, 4), bad)).square().mean().backward()
        assert not torch.isfinite(part.update())
    assert part.skipped_in_a_row == 2 and part.updates == 4
    assert all(torch.equal(weights[k], v) for k, v in part.module.state_dict().items())
    for index, state in part.optimizer.state_dict()["state"].items():
        assert all(torch.equal(moments[index][k], v) for k, v in state.items())
    assert all(p.grad is None for p in part.module.parameters())
    _train(part, 1, seed=2)
    assert part.skipped_in_a_row == 0
    assert not torch.equal(weights["last.weight"], part.module.state_dict()["last.weight"])
    assert all(torch.isfinite(p).all() for p in part.module.parameters())


def test_optimiser_moments_follow_parameters_by_name_when_the_registration_order_changes():
    torch.manual_seed(0)
    before = _part(Net(("first", "slow", "last")))
    _train(before, 3, seed=1)
    saved_state = copy.deepcopy(before.optimizer.state_dict())  # as read from disk: not the live moments
    saved_names = parameter_names(before)
    # the same layers registered in another order (a refactor): load weights and moments by name
    after = _part(Net(("last", "first", "slow")))
    after.module.load_state_dict(before.module.state_dict())
    assert parameter_names(after) != saved_names
    assert registration_names(after, before.module.state_dict()) == saved_names  # older checkpoints
    load_optimizer_state(after, saved_state, saved_names)
    after.scheduler.load_state_dict(before.scheduler.state_dict())
    _train(before, 2, seed=2)
    _train(after, 2, seed=2)
    for name, value in before.module.state_dict().items():
        torch.testing.assert_close(after.module.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_recipe_rate_multiples_by_name_prefix_make_their_own_groups():
    """``optim.lr_scales``: the longest matching prefix multiplies the module's own multiple; one
    AdamW update moves each weight by about its group's rate (Adam's first step is the rate times the
    gradient's sign), so the 30x layer moves 30x as far; a prefix that names nothing is refused."""
    torch.manual_seed(0)
    net = Net(("first", "slow", "last"))
    start = copy.deepcopy(net.state_dict())
    part = _part(net, {"first": 30.0, "first.bias": 2.0, "slow": 10.0})
    rates = {
        parameter_names(part)[i]: group["initial_lr"] / 1e-2
        for i, group in enumerate(g for g in part.optimizer.param_groups for _ in g["params"])
    }
    want = {"first.weight": 30.0, "first.bias": 2.0, "slow.weight": 1.0, "slow.bias": 10.0}
    assert rates == pytest.approx({**want, "last.weight": 1.0, "last.bias": 1.0})  # slow.weight: 0.1 x 10
    # the warm-up's first step runs at half the rate
    _train(part, 1, seed=1)
    for name, multiple in want.items():
        step = (net.state_dict()[name] - start[name]).abs()
        torch.testing.assert_close(
            step, torch.full_like(step, 0.5e-2 * multiple), rtol=1e-3, atol=0, msg=name
        )
    # older checkpoints (no names) are read in the same group layout
    assert registration_names(part, net.state_dict()) == parameter_names(part)
    with pytest.raises(
        RecipeError, match="optim.lr_scales: no trained parameter of the generator starts with 'rate_'"
    ):
        _part(Net(("first", "slow", "last")), {"rate_": 30.0})


def test_optimiser_state_of_other_parameters_is_refused():
    saved = _part(Net(("first", "slow", "last")))
    _train(saved, 1, seed=1)
    other = _part(Net(("first", "last")))
    with pytest.raises(ValueError, match="slow"):
        load_optimizer_state(other, saved.optimizer.state_dict(), parameter_names(saved))


@pytest.mark.parametrize("packed", COMMITTED_STATES, ids=[p.name for p in COMMITTED_STATES])
def test_committed_training_states_resume_with_the_current_models(packed: Path, tmp_path: Path):
    """``audiokit train --resume`` of a committed state must keep working after refactors (session 18:
    moving one head's registration broke the enhancer's)."""
    state = load_checkpoint(unpack_run(packed, tmp_path / "run"))
    recipe = recipe_from_dict(state["recipe"])
    model = build_model(recipe.model)
    model.load_state_dict(state["model"])
    part = make_part("model", model, model, 1e-3, [0.9, 0.99], lambda step: 1.0, 0.0)
    role = task_class(recipe.task).model_role
    names = state.get("optimizer_parameters", {}).get(role) or registration_names(part, state["model"])
    load_optimizer_state(part, state["optimizers"][role], names)
    parameters = dict(model.named_parameters())
    moments = part.optimizer.state_dict()["state"]
    assert len(moments) == len(parameters)
    for index, name in enumerate(parameter_names(part)):
        assert moments[index]["exp_avg"].shape == parameters[name].shape, name
