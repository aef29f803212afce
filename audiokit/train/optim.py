"""Optimising one module: AdamW, the learning-rate schedule, gradient clipping (a :class:`Part`).

The run loop makes the model's part; a task may make more (the codec's discriminators). Checkpoints
hold each part's optimiser and scheduler under its ``role``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.train.recipe import ScheduleConfig

T = TypeVar("T")
# AdamW settings a recipe sets that a resumed optimiser keeps from the recipe, not from the checkpoint
# (the rates: Part.apply_base_rate)
RECIPE_SETTINGS = ("betas", "weight_decay")


def lr_factor(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """``step -> multiplier`` of the base learning rate: linear warm-up, the chosen decay, and an
    optional linear cool-down to ``min_lr_ratio`` from ``cooldown_start``."""
    warmup = schedule.warmup_steps

    def factor(step: int) -> float:
        start = schedule.cooldown_start
        if start is None or step < start:
            return decayed(step)
        progress = min(1.0, (step - start) / schedule.cooldown_steps)
        return decayed(start) + (schedule.min_lr_ratio - decayed(start)) * progress

    def decayed(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.decay == "constant":
            return 1.0
        if schedule.decay == "exponential":
            return schedule.gamma ** (step - warmup)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return schedule.min_lr_ratio + (1.0 - schedule.min_lr_ratio) * cosine

    return factor


@dataclass
class Part:
    """A trained module, the module that runs it in training (DDP-wrapped or itself), its AdamW, LR
    schedule (one step per update), base rate, gradient clipping norm (0: none), each optimiser
    group's multiple of the base rate (``scales``, one per group) and the recipe's multiples by
    parameter-name prefix that made those groups (``prefix_scales``)."""

    role: str
    module: nn.Module
    train_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    base_rate: float
    grad_clip: float
    scales: list[float] = field(default_factory=lambda: [1.0])
    prefix_scales: dict[str, float] = field(default_factory=dict)
    skipped_in_a_row: int = 0

    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        return self.scheduler.get_last_lr()[0]

    @property
    def updates(self) -> int:
        """Updates so far (a part that has had none holds only its initialisation)."""
        return self.scheduler.last_epoch

    def update(self) -> torch.Tensor:
        """Clip the gradients, step the optimiser and the schedule, clear the gradients; returns the
        gradient norm before clipping. Gradients whose norm is not finite (a NaN or an infinity, which
        one optimiser step would spread to every weight and to the EMA) are dropped instead: the weights
        stay, the schedule moves on, and :attr:`skipped_in_a_row` counts it (0 after a good update)."""
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip or math.inf)
        finite = bool(torch.isfinite(norm))
        if finite:
            self.optimizer.step()
        self.skipped_in_a_row = 0 if finite else self.skipped_in_a_row + 1
        with warnings.catch_warnings():  # torch warns when a first update is skipped: intended here
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm.detach()

    def apply_base_rate(self) -> None:
        """Rate the optimiser by :attr:`base_rate` and the current schedule, which a restored scheduler
        state (holding the old base rate) may have overwritten, e.g. after ``--resume --set``."""
        self.scheduler.base_lrs = [self.base_rate * scale for scale in self.scales]
        groups = zip(self.optimizer.param_groups, self.scheduler.lr_lambdas, self.scales, strict=True)
        for group, factor, scale in groups:
            group["initial_lr"] = self.base_rate * scale
            group["lr"] = self.base_rate * scale * factor(self.scheduler.last_epoch)


def make_part(
    role: str,
    module: nn.Module,
    train_module: nn.Module,
    rate: float,
    betas: list[float],
    factor: Callable[[int], float],
    grad_clip: float,
    weight_decay: float = 0.0,
    prefix_scales: dict[str, float] | None = None,
) -> Part:
    """A :class:`Part` with AdamW at base ``rate`` scaled by ``factor(update)``.

    Only parameters that require gradients are optimised (see :func:`trained_parameters`). Those named
    in ``module.lr_scales()`` (when it has that method: name -> multiple of the rate, e.g. a front
    end's window length in samples) get their own groups, and so do those whose names start with a key
    of ``prefix_scales`` (a recipe's ``optim.lr_scales``; the longest matching prefix wins, and it
    multiplies the module's own multiple); the rest share the first. ``RecipeError`` when a prefix
    matches no trained parameter.
    """
    prefix_scales = dict(prefix_scales or {})
    named = trained_parameters(module)
    unmatched = [p for p in prefix_scales if not any(name.startswith(p) for name, _ in named)]
    if unmatched:
        raise RecipeError(
            f"optim.lr_scales: no trained parameter of the {role} starts with {unmatched[0]!r} "
            f"(e.g. {', '.join(name for name, _ in named[:3])})"
        )
    groups = _rate_groups(module, named, prefix_scales)
    scales = list(groups)
    optimizer = torch.optim.AdamW(
        [{"params": groups[scale], "lr": rate * scale} for scale in scales],
        rate,
        betas=tuple(betas),
        weight_decay=weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return Part(role, module, train_module, optimizer, scheduler, rate, grad_clip, scales, prefix_scales)


def trained_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``module``'s named parameters that require gradients (frozen ones, ``optim.frozen``, do not)."""
    return [(name, parameter) for name, parameter in module.named_parameters() if parameter.requires_grad]


def _rate_groups(
    module: nn.Module, named: Iterable[tuple[str, T]], prefix_scales: dict[str, float]
) -> dict[float, list[T]]:
    """``named`` items grouped by their multiple of the base rate (``module.lr_scales()`` times the
    longest matching ``prefix_scales`` entry, 1 for the rest), the groups in order of first appearance
    (1 first) and without empty ones: the optimiser's layout of :func:`make_part`."""
    named_scales = module.lr_scales() if hasattr(module, "lr_scales") else {}
    by_length = sorted(prefix_scales.items(), key=lambda item: -len(item[0]))
    groups: dict[float, list[T]] = {1.0: []}
    for name, item in named:
        prefix_scale = next((scale for prefix, scale in by_length if name.startswith(prefix)), 1.0)
        groups.setdefault(float(named_scales.get(name, 1.0)) * prefix_scale, []).append(item)
    return {scale: members for scale, members in groups.items() if members}


def parameter_names(part: Part) -> list[str]:
    """The names of ``part``'s parameters in its optimiser's index order (the groups, then their
    members): what a checkpoint stores beside the optimiser state so that it loads by name."""
    names = {id(parameter): name for name, parameter in part.module.named_parameters()}
    return [names[id(p)] for group in part.optimizer.param_groups for p in group["params"]]


def registration_names(part: Part, module_state: dict[str, torch.Tensor]) -> list[str]:
    """The index order of an optimiser state written before checkpoints stored names: the parameters
    among ``module_state``'s keys (a ``state_dict``, whose order is the registration order the
    optimiser saw), grouped by rate as :func:`make_part` groups them."""
    current = {name for name, _ in trained_parameters(part.module)}
    ordered = [(name, name) for name in dict.fromkeys(module_state) if name in current]
    groups = _rate_groups(part.module, ordered, part.prefix_scales)
    return [name for members in groups.values() for name in members]


def load_optimizer_state(part: Part, state: dict, saved_names: list[str]) -> None:
    """Load an optimiser ``state`` (``state_dict()``) whose indices are the parameters ``saved_names``
    into ``part``, matched by name: a model whose parameters are now registered in another order
    resumes with each parameter's own moments. The moments, step counts and rates come from ``state``;
    the :data:`RECIPE_SETTINGS` stay ``part``'s, i.e. the recipe's, so that ``--resume --set
    optim.weight_decay=...`` applies. ``ValueError`` when the names or groups differ."""
    names = parameter_names(part)
    if sorted(saved_names) != sorted(names):
        missing = sorted(set(names) - set(saved_names)) + sorted(set(saved_names) - set(names))
        raise ValueError(f"optimiser parameters differ from the model's: {', '.join(missing[:5])}")
    saved_index = {name: index for index, name in enumerate(saved_names)}
    index = {name: i for i, name in enumerate(names)}
    groups, start = [], 0
    for saved_group, group in zip(state["param_groups"], part.optimizer.param_groups, strict=True):
        members = names[start : start + len(group["params"])]
        start += len(members)
        if sorted(saved_index[n] for n in members) != sorted(saved_group["params"]):
            raise ValueError("optimiser groups differ from the model's (learning-rate multiples changed)")
        settings = {key: group[key] for key in RECIPE_SETTINGS}
        groups.append({**saved_group, **settings, "params": [index[n] for n in members]})
    saved = state["state"]
    moments = {index[n]: saved[saved_index[n]] for n in names if saved_index[n] in saved}
    part.optimizer.load_state_dict({"state": moments, "param_groups": groups})
