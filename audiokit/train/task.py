"""What one model family's training adds to the generic run loop: a :class:`Task`, and their registry.

The run loop (:class:`~audiokit.train.trainer.Trainer`) owns devices, DDP, autocast, the model's
optimiser, schedule and EMA, checkpoints, signals, records and when to evaluate. A task says what a
step computes (its losses and their backward pass, and any parts of its own, such as the codec's
discriminators), which batches it trains on, and how the model is scored. A new task is a subclass
registered with :func:`register_task` plus a recipe that names it (``task: <name>``)::

    @register_task
    class DenoiseTask(Task):
        name, family, recipe_type = "denoise", "enhancer", Recipe

        def train_step(self, step, batch, model): ...   # forward + backward; returns logs
        def evaluate(self, model, clips): ...            # -> Evaluation
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from audiokit.errors import RecipeError
from audiokit.evaluation import score_pair, summarize
from audiokit.models.base import AudioModel, resolve_config
from audiokit.train.data import CropDataset, load_validation, read_clips
from audiokit.train.optim import Part
from audiokit.train.runtime import Runtime

if TYPE_CHECKING:
    from audiokit.train.recipe import ModelSection, Recipe

BUILTIN_TASKS = {
    "codec": "audiokit.train.tasks.codec",
    "enhance": "audiokit.train.tasks.enhance",
    "bwe": "audiokit.train.tasks.bwe",
}  # imported when first named
TASKS: dict[str, type[Task]] = {}


@dataclass
class Evaluation:
    """What :meth:`Task.evaluate` found.

    ``record``: JSON-ready results (a line of ``eval.jsonl`` with the step); ``scalars``: TensorBoard
    scalars; ``examples``: ``(tag, (channels, samples) audio, sample rate)`` for TensorBoard.
    """

    record: dict[str, Any]
    scalars: dict[str, float] = field(default_factory=dict)
    examples: list[tuple[str, torch.Tensor, int]] = field(default_factory=list)


class Task:
    """Base of every training task.

    Class attributes: ``name`` (what ``task:`` says), ``family`` (the model family it trains, e.g.
    ``"codec"``), ``recipe_type`` (its :class:`~audiokit.train.recipe.Recipe` subclass),
    ``model_role`` (the model part's name in checkpoints and logs), ``broadcast_buffers`` (whether
    DDP broadcasts the model's buffers from rank 0 every step).

    A task is made once per process, after the model (and before DDP wrapping); parts of its own
    (:class:`~audiokit.train.optim.Part`) go in :attr:`parts` so checkpoints hold them.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    recipe_type: ClassVar[type[Recipe]]
    model_role: ClassVar[str] = "model"
    broadcast_buffers: ClassVar[bool] = True

    def __init__(self, recipe: Recipe, model: AudioModel, runtime: Runtime) -> None:
        self.recipe = recipe
        self.model = model
        self.runtime = runtime
        self.parts: list[Part] = []

    # -- data ---------------------------------------------------------------------------------------
    def train_data(self) -> torch.utils.data.Dataset:
        """The training batches: ``dataset[step]`` is this process's batch for ``step`` (a dict of
        tensors), a pure function of ``(run.seed, rank, step)`` so that a resume continues exactly.
        Default: random crops of ``data.train`` with the recipe's augmentation
        (:class:`~audiokit.train.data.CropDataset`: ``"input"`` and ``"clean"``)."""
        d, rate = self.recipe.data, self.model.sample_rate
        noisy = d.noise and d.noise_probability > 0
        noise = read_clips(d.noise, "*", key="data.noise", sample_rate=rate) if noisy else None
        clips = read_clips(d.train, d.glob, key="data.train", sample_rate=rate)
        seed, rank = self.recipe.run.seed, self.runtime.rank
        return CropDataset(clips, rate, self.model.channels, d, seed, rank, noise)

    def validation_data(self) -> list[tuple[str, torch.Tensor]]:
        """Validation clips ``(name, (channels, samples))`` of ``data.valid`` (none when it is null)."""
        d, e = self.recipe.data, self.recipe.eval
        if d.valid is None:
            return []
        rate, channels = self.model.sample_rate, self.model.channels
        return load_validation(d.valid, rate, channels, d.glob, e.max_files, e.max_seconds)

    def adapt_pretrained(self, pretrained: AudioModel) -> tuple[AudioModel, dict[str, Any]]:
        """``--init`` weights made to fit the recipe's model, and what was done (for ``run.json``)."""
        return pretrained, {}

    # -- training -----------------------------------------------------------------------------------
    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        """Compute the model's loss on ``batch`` and back-propagate it (``model``: the model as it runs
        in training, DDP-wrapped under torchrun); update the task's own parts if due. The run loop then
        clips, steps the model's optimiser and schedule and updates the EMA. Returns logs: detached
        tensors or floats (scalars go to ``metrics.jsonl``; vectors to TensorBoard only)."""
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, model: AudioModel, clips: list[tuple[str, torch.Tensor]]) -> Evaluation:
        """Score ``model`` (the EMA weights, eval mode, no gradients) on the validation ``clips``."""
        raise NotImplementedError

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds of the task beyond its parts (keys beside the run loop's)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a whole checkpoint (the task's keys and everything else)."""


def mean_scores(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], sample_rate: int) -> dict[str, float]:
    """Mean over ``(reference, output)`` pairs of ``(channels, samples)`` audio of every metric of
    :func:`audiokit.evaluation.score_pair` (NaN scores left out)."""
    rows = [score_pair(reference, output, sample_rate) for reference, output in pairs]
    return summarize(rows).mean


def build_model(section: ModelSection, where: str = "recipe") -> AudioModel:
    """An untrained model of the recipe's ``model`` section (registered config + key-by-key overrides)."""
    family, config = resolve_config(section.config, section.options, where, RecipeError)
    try:
        return family(config)
    except ValueError as exc:  # a value of the right type the model cannot be built with
        raise RecipeError(f"{where}: model.options: {exc}") from None


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task that ``task: <cls.name>`` names."""
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task] | None:
    """The task registered as ``name`` (built-in tasks are imported on first use), or None."""
    if name not in TASKS and name in BUILTIN_TASKS:
        importlib.import_module(BUILTIN_TASKS[name])
    return TASKS.get(name)


def task_names() -> list[str]:
    """Names of the built-in and registered tasks."""
    return sorted(set(BUILTIN_TASKS) | set(TASKS))
