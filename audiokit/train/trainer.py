"""The generic run loop: any :class:`~audiokit.train.task.Task` trained as a recipe says, in a run directory.

The loop owns what every task shares: the process (:class:`~audiokit.train.runtime.Runtime`: device,
threads, DDP under ``torchrun``, autocast), the model's optimiser, LR schedule and EMA, training
batches by step, checkpoints that resume bit-exactly (:meth:`Trainer.state_dict`), SIGINT/SIGTERM
(stop after the current step, with a checkpoint), the run directory's records
(:class:`~audiokit.train.records.RunRecords`) and periodic evaluation of the EMA model (the task
scores it through :mod:`audiokit.evaluation`). One step: the task computes the loss of the step's
batch and back-propagates it (updating parts of its own, such as discriminators, when due); the loop
clips, steps the model's optimiser and schedule, and updates the EMA.

Under ``torchrun`` every process draws its own batches and only rank 0 writes records, checkpoints and
evaluations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from audiokit.errors import (
    AudiokitError,
    ModelError,
    OutOfMemory,
    PeerStopped,
    RecipeError,
    TrainingError,
    UsageError,
)
from audiokit.io import TEMP_NAME, clean_stale_temps
from audiokit.models.base import AudioModel, ModelConfig, registered_names, resolve_config, with_article
from audiokit.train.checkpoint import RUN_CHECKPOINT as CHECKPOINT
from audiokit.train.checkpoint import RUN_WEIGHTS as WEIGHTS
from audiokit.train.checkpoint import (
    load_resumable_state,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from audiokit.train.data import batches
from audiokit.train.ema import EMA
from audiokit.train.optim import (
    Part,
    load_optimizer_state,
    lr_factor,
    make_part,
    parameter_names,
    registration_names,
)
from audiokit.train.recipe import Recipe
from audiokit.train.records import RECORDS, RunRecords, evaluated
from audiokit.train.run_lock import RunLock
from audiokit.train.runtime import Runtime, local_rank, seed_all
from audiokit.train.signals import StopRequested, StopSignals
from audiokit.train.task import Task, build_model, task_class

LOG_LINE_SECONDS = 60.0
"""Seconds between the progress lines training writes where standard error is not a terminal."""

MAX_SKIPPED_UPDATES = 25
"""Updates in a row a part may drop for gradients that are not finite before the run stops (diverged)."""


def _changed_keys(was: Any, now: Any, prefix: str) -> list[tuple[str, str, str]]:
    """The dotted keys whose values differ between the nested mappings ``was`` and ``now``, with both
    values as text ("unset": a key in the other only)."""
    if not (isinstance(was, dict) and isinstance(now, dict)):
        return [] if was == now else [(prefix, _shown(was), _shown(now))]
    return [
        change
        for key in sorted(set(was) | set(now), key=str)
        for change in _changed_keys(was.get(key, _UNSET), now.get(key, _UNSET), f"{prefix}.{key}")
    ]


_UNSET = object()


def _saved_model(state: dict) -> dict:
    """The ``model`` section of a training checkpoint's recipe (empty when not recorded)."""
    return (state.get("recipe") or {}).get("model") or {}


def _saved_config(state: dict) -> ModelConfig | None:
    """The model config a training checkpoint's recipe resolves to (None: not recorded, or no longer
    registered)."""
    model = _saved_model(state)
    try:
        return resolve_config(model["config"], model.get("options") or {}, "checkpoint")[1]
    except (KeyError, TypeError, ModelError):
        return None


def _misfit(saved: ModelConfig | None, wanted: ModelConfig, holder: str, exc: Exception) -> str:
    """Why weights did not load, in a line: the model options (up to four) in which the ``saved``
    config (``holder``'s: "weights", "checkpoint") differs from the ``wanted`` one, else ``exc``."""
    changed = []
    if saved is not None:
        was, now = dataclasses.asdict(saved), dataclasses.asdict(wanted)
        changed = [c for c in _changed_keys(was, now, "model.options") if c[0] != "model.options.name"]
    if not changed:
        return " ".join(str(exc).split())[:300]
    return "; ".join(f"{key}: {old} in the {holder}, {new} in the recipe" for key, old, new in changed[:4])


@contextmanager
def _said_once_per_machine() -> Iterator[None]:
    """Setting up a run under torchrun: an :class:`AudiokitError` that every process meets alike (the
    same recipe, ``--init`` weights, checkpoint) is said by the first process of each machine; the
    others stop without a word (:class:`PeerStopped`), as for an error in the command line."""
    try:
        yield
    except AudiokitError as exc:
        if local_rank() > 0 and not isinstance(exc, PeerStopped):
            raise PeerStopped(str(exc)) from None
        raise


def out_of_memory(exc: BaseException) -> str | None:
    """What an allocation that failed tried to get (e.g. ``"tried to allocate 2.00 GiB"``), when ``exc``
    is one: a GPU's ``torch.OutOfMemoryError``, the CPU allocator's error or a :class:`MemoryError` (numpy's
    "Unable to allocate 58.2 TiB for an array ...", drawing a batch); ``None`` for other errors."""
    message = str(exc)
    if isinstance(exc, MemoryError):
        found = re.search(r"allocate ([\d.]+ [KMGTPE]i?B)", message)
        return f"tried to allocate {found.group(1)}" if found else "an allocation failed"
    if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in message:
        return None
    found = re.search(r"tried to allocate (\d+) bytes", message, re.IGNORECASE)
    if found:
        return f"tried to allocate {int(found.group(1)) / 2**20:.1f} MiB"
    found = re.search(r"tried to allocate ([\d.]+ [KMGT]i?B)", message, re.IGNORECASE)
    return f"tried to allocate {found.group(1)}" if found else "an allocation failed"


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value, default=str)


def _processes(count: int) -> str:
    """``"1 process"``, ``"2 processes"``."""
    return f"{count} process" + ("" if count == 1 else "es")


@dataclass
class TrainResult:
    """What a :meth:`Trainer.fit` call did: final step, why it stopped, last logged values, evaluations."""

    step: int
    stopped: str
    losses: dict[str, float] = field(default_factory=dict)
    evaluations: list[dict] = field(default_factory=list)


class Trainer:
    """Train the model of ``recipe`` with its task (``recipe.task``), in ``run_dir``.

    Args:
        recipe: the checked recipe (:func:`~audiokit.train.recipe.load_recipe`).
        run_dir: where the resolved recipe, ``run.json``, checkpoints, TensorBoard logs,
            ``metrics.jsonl``, ``eval.jsonl`` and the EMA weights (``model.safetensors``) go.
        resume: continue from ``run_dir/checkpoints/latest.pt`` (exactly: weights, optimisers,
            schedulers, EMA, the task's state, RNG states and data position).
        init: start from the weights of a training checkpoint (its EMA weights) or of a
            ``.safetensors`` model / shipped model name (fitted by :meth:`Task.adapt_pretrained`), with
            fresh optimisers at step 0.
        quiet: no progress bar or notes.
        model: a ready model instead of the recipe's (of the task's family).
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path,
        resume: bool = False,
        init: str | Path | None = None,
        quiet: bool = False,
        model: AudioModel | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.runtime = runtime = Runtime.start(recipe.run)
        self.run_lock: RunLock | None = None
        self.run_lock_released = False
        self.records: RunRecords | None = None
        # every process reads the same recipe, weights and checkpoint, and fails alike: said once
        with _said_once_per_machine():
            self.check_run_dir(self.run_dir, resume)
            self.run_lock = runtime.on_main(lambda: RunLock(self.run_dir))  # rank 0's; None on the others
            try:
                self._set_up(resume, init, model)
            except BaseException:
                self.close()
                raise

    def _set_up(self, resume: bool, init: str | Path | None, model: AudioModel | None) -> None:
        """Build the model, task, optimisers and data; restore the checkpoint; open the records."""
        recipe, runtime, run = self.recipe, self.runtime, self.recipe.run
        checkpoint_path = self.run_dir / CHECKPOINT
        task = task_class(recipe.task)
        if task is None:
            raise RecipeError(f"recipe: unknown task {recipe.task!r}")

        seed_all(run.seed)  # identical initial weights on every rank
        self.model = (model if model is not None else build_model(recipe.model)).to(runtime.device)
        self.task: Task = task(recipe, self.model, runtime)
        start: dict[str, Any] = {"resumed": resume, "init": str(init) if init else None, "init_sha256": None}
        if init is not None:
            start.update(self._load_init(init))
        self.frozen = self._freeze(recipe.optim.frozen)
        self.ema = EMA(self.model, recipe.optim.ema_decay)
        self.train_model = runtime.wrap(self.model, self.task.broadcast_buffers)
        o, s = recipe.optim, recipe.schedule
        factor = lr_factor(s, s.total_steps or run.max_steps)
        self.model_part = make_part(
            task.model_role,
            self.model,
            self.train_model,
            o.learning_rate,
            o.betas,
            factor,
            o.grad_clip,
            o.weight_decay,
            o.lr_scales,
        )
        self.parts: list[Part] = [self.model_part, *self.task.parts]
        seed_all(run.seed + runtime.rank)

        self.step = 0
        self.dataset = self.task.train_data()
        # rank 0's own work: an error there stops every rank (on_main), not only rank 0
        self.validation = runtime.on_main(self.task.validation_data) or []
        if resume:
            self._restore(load_resumable_state(checkpoint_path))
        self.records = runtime.on_main(lambda: self._start_records(start))

    def _start_records(self, start: dict[str, Any]) -> RunRecords:
        """Rank 0: clear what a killed session left, open the records and add this session to them."""
        self._remove_stale_temps()
        records = RunRecords(self.run_dir, self.recipe.run.tensorboard, self.step)
        records.start_session(self.recipe, self.model.name, self.runtime, self.step, **start)
        killed = records.killed_session
        if killed is not None and not self.quiet:
            reached = "" if killed["end_step"] is None else f" after step {killed['end_step']}"
            print(
                f"audiokit train: note: the session of {self.run_dir} started {killed['started']} ended "
                f"without a record{reached}: it was killed (SIGKILL, the kernel's out-of-memory killer, "
                f"or the machine stopped; `dmesg` may say which); going on from its checkpoint at step "
                f"{self.step}",
                file=sys.stderr,
            )
        return records

    @staticmethod
    def check_run_dir(run_dir: Path, resume: bool) -> None:
        """Refuse a run directory that is a file, a resume without a checkpoint, and a new run where one
        would replace a checkpoint or weights (``model.safetensors``: a run's whose checkpoints were
        deleted, or an ``audiokit checkpoint average``)."""
        checkpoint_path, weights = run_dir / CHECKPOINT, run_dir / WEIGHTS
        if run_dir.exists() and not run_dir.is_dir():
            raise UsageError(f"{run_dir}: exists and is not a folder; choose another --run-dir")
        above = next((p for p in run_dir.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"{run_dir}: {above} is a file, not a folder; choose another --run-dir")
        if resume and not checkpoint_path.is_file():
            raise UsageError(f"{checkpoint_path}: nothing to resume (no checkpoint in the run directory)")
        if not resume and checkpoint_path.is_file():
            raise UsageError(
                f"{run_dir}: already holds a checkpoint; pass --resume to continue it or choose "
                "another --run-dir"
            )
        if not resume and weights.is_file():
            raise UsageError(
                f"{weights}: already exists and a new run would replace it; choose another --run-dir "
                f"(--init {run_dir} --run-dir NEW_DIR starts a new run from these weights)"
            )

    def _remove_stale_temps(self) -> None:
        """Remove the temporary files (:func:`~audiokit.io.atomic_path`'s) of saves that a killed session
        (SIGKILL, power loss) left in the run directory: checkpoints of up to hundreds of MB each."""
        checkpoints = (self.run_dir / CHECKPOINT).parent
        temps = [TEMP_NAME.match(path.name) for path in checkpoints.glob(".*")]
        saves = [checkpoints / f"{m['stem']}{m['suffix']}" for m in temps if m]
        records = [WEIGHTS, "model.json", *RECORDS]
        clean_stale_temps([*saves, *(self.run_dir / name for name in records)])

    @property
    def is_main(self) -> bool:
        """Whether this process writes the records (rank 0)."""
        return self.runtime.is_main

    def _freeze(self, paths: list[str]) -> list[nn.Module]:
        """The submodules ``optim.frozen`` names, their parameters set not to require gradients."""
        modules = []
        for path in paths:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                children = ", ".join(name for name, _ in self.model.named_children())
                raise RecipeError(
                    f"optim.frozen: the model has no submodule {path!r} (its top-level ones: {children})"
                ) from None
            module.requires_grad_(False)
            modules.append(module)
        return modules

    def _load_init(self, init: str | Path) -> dict[str, Any]:
        """Load ``--init`` weights into the model; returns what ``run.json`` records of them."""
        record: dict[str, Any] = {}
        if Path(init).is_file() and Path(init).suffix not in (".pt", ".safetensors"):
            raise UsageError(
                f"--init {init}: not a model file (a .safetensors model, a .pt training checkpoint, a run "
                "directory or a shipped model name)"
            )
        if Path(init).suffix == ".pt":
            state = load_training_state(init)
            self._check_init_family(init, registered_names().get(_saved_model(state).get("config")))
            weights = state["ema"]["module"] if "ema" in state else state["model"]
            weights_config = _saved_config(state)
        else:
            pretrained = AudioModel.from_pretrained(init)
            self._check_init_family(init, type(pretrained))
            record["init_sha256"] = pretrained.weights_sha256()  # as read, before any fitting
            try:
                pretrained, note = self.task.adapt_pretrained(pretrained)
            except ModelError as exc:
                raise UsageError(f"--init {init}: weights do not fit the recipe ({exc})") from None
            if note and self.is_main and not self.quiet:
                print(f"--init {init}: fitted to the recipe's model: {json.dumps(note)}", file=sys.stderr)
            record.update(note)
            weights, weights_config = pretrained.state_dict(), pretrained.config
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            message = _misfit(weights_config, self.model.config, "weights", exc)
            raise UsageError(f"--init {init}: weights do not fit the recipe's model ({message})") from None
        record.setdefault("init_sha256", self.model.weights_sha256())
        return record

    def _check_init_family(self, init: str | Path, family: type[AudioModel] | None) -> None:
        """Refuse ``--init`` weights of another model family (a codec's into an enhancer recipe) in one
        line, instead of a failure on the first tensor that does not fit; ``None``: not known."""
        if family is not None and family.family != self.model.family:
            raise UsageError(
                f"--init {init}: {with_article(family.family)} model's weights, and the recipe trains "
                f"{with_article(self.model.family)} (task: {self.recipe.task}); --init takes weights of "
                "the recipe's own family"
            )

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (see :mod:`audiokit.train.checkpoint`); each part's
        optimiser and scheduler under its role, the task's parts' weights under their roles, the task's
        own state beside. Collective under DDP (every rank's RNG state is gathered)."""
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizers": {part.role: part.optimizer.state_dict() for part in self.parts},
            "optimizer_parameters": {part.role: parameter_names(part) for part in self.parts},
            "schedulers": {part.role: part.scheduler.state_dict() for part in self.parts},
            "rng": self.runtime.gather(rng_state()),
            "data": {
                "next_step": self.step,
                "seed": self.recipe.run.seed,
                "world_size": self.runtime.world_size,
            },
            "recipe": dataclasses.asdict(self.recipe),
        }
        for part in self.task.parts:
            state[part.role] = part.module.state_dict()
        state.update(self.task.state_dict())
        return state

    def _restore(self, state: dict) -> None:
        """Continue from ``state``. A task part without updates in it holds only its initialisation, so
        the recipe may have changed it (the codec's discriminators before their start): it starts fresh.
        The task, the model config and the seed must be the checkpoint's (the seed fixes the data stream
        and the run's record)."""
        checkpoint = self.run_dir / CHECKPOINT
        self._check_same_run(state.get("recipe"))
        seed = state.get("data", {}).get("seed")
        if seed is not None and seed != self.recipe.run.seed:
            raise UsageError(
                f"run.seed: {checkpoint} was trained with seed {seed}, the recipe now says "
                f"{self.recipe.run.seed}; --resume continues a run exactly and keeps its seed (drop the "
                f"change), or start a new run from these weights: --init {checkpoint} --run-dir NEW_DIR"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            for part in self.parts:
                updates = state["schedulers"].get(part.role, {}).get("last_epoch", 0)
                if part is self.model_part or updates > 0:
                    if part is not self.model_part:
                        part.module.load_state_dict(state[part.role])
                    module_state = state["model" if part is self.model_part else part.role]
                    saved_names = state.get("optimizer_parameters", {}).get(part.role)
                    if saved_names is None:  # written before checkpoints named the parameters
                        saved_names = registration_names(part, module_state)
                    load_optimizer_state(part, state["optimizers"][part.role], saved_names)
                    part.scheduler.load_state_dict(state["schedulers"][part.role])
        except (KeyError, RuntimeError, ValueError) as exc:
            # the resolved configs: the same model may be named with other options (a registered config
            # that took an option over, as enhance-16k's took the noise floor)
            message = _misfit(_saved_config(state), self.model.config, "checkpoint", exc)
            raise UsageError(
                f"{checkpoint}: does not fit this recipe ({message}); the run's own recipe is "
                f"{self.run_dir / 'recipe.yaml'}; a changed model starts from the run's weights with "
                f"--init {self.run_dir} --run-dir NEW_DIR"
            ) from None
        for part in self.parts:
            part.apply_base_rate()
        self.task.load_state_dict(state)
        saved_world = state["data"]["world_size"]
        if saved_world != self.runtime.world_size:
            launch = f"torchrun --nproc-per-node {saved_world}" if saved_world > 1 else "no torchrun"
            raise UsageError(
                f"{checkpoint}: written by a run of {_processes(saved_world)}, this session has "
                f"{_processes(self.runtime.world_size)}; --resume continues a run exactly with as many "
                f"({launch}), or start a new run from these weights: --init {checkpoint} --run-dir NEW_DIR"
            )
        self.step = int(state["data"]["next_step"])
        set_rng_state(state["rng"][self.runtime.rank])

    def _check_same_run(self, saved: dict | None) -> None:
        """Refuse to resume a checkpoint of another task or model config (a run directory of another
        recipe), naming both, instead of failing on the first weight that does not fit."""
        if not isinstance(saved, dict):  # a checkpoint written before checkpoints held their recipe
            return
        task = saved.get("task", self.recipe.task)
        config = (saved.get("model") or {}).get("config", self.recipe.model.config)
        if (task, config) != (self.recipe.task, self.recipe.model.config):
            raise UsageError(
                f"{self.run_dir / CHECKPOINT}: holds a run of task {task!r} with model.config {config!r}, "
                f"the recipe trains task {self.recipe.task!r} with {self.recipe.model.config!r}; resume "
                f"with the run's recipe ({self.run_dir / 'recipe.yaml'}) or choose another --run-dir"
            )

    def save(self) -> None:
        """Write ``checkpoints/latest.pt`` (and ``step_N.pt`` every ``keep_every`` steps) and the EMA
        weights (``model.safetensors``) on rank 0."""
        state = self.state_dict()  # collective under DDP: every rank takes part

        def write() -> None:
            path = save_checkpoint(self.run_dir / CHECKPOINT, state)
            keep = self.recipe.run.keep_every
            if keep and self.step % keep == 0:
                save_checkpoint(path.with_name(f"step_{self.step:08d}.pt"), state)
            saved = self.ema.module.save_pretrained(self.run_dir / WEIGHTS, extra={"step": self.step})
            sha256 = json.loads(saved.with_suffix(".json").read_text())["sha256"]
            self.records.saved_weights(self.step, sha256)

        self.runtime.on_main(write)  # the others wait; a failed write stops them too

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The task's loss and backward pass, then the model's update and EMA; returns the logs."""
        self.model.train()
        for module in self.frozen:
            module.eval()
        logs = self.task.train_step(self.step, batch, self.train_model)
        logs[f"grad_norm/{self.model_part.role}"] = self.model_part.update()
        self.ema.update(self.model)
        self._check_skipped_updates()
        return logs

    def _check_skipped_updates(self) -> None:
        """Say on stderr when a part's update is dropped for gradients that are not finite, and stop the
        run with a :class:`~audiokit.errors.TrainingError` after :data:`MAX_SKIPPED_UPDATES` in a row."""
        for part in self.parts:
            if part.skipped_in_a_row == 1 and self.is_main:
                print(
                    f"audiokit train: step {self.step + 1}: the {part.role}'s gradients are not finite "
                    "(NaN or infinite); its update is skipped",
                    file=sys.stderr,
                )
            if part.skipped_in_a_row >= MAX_SKIPPED_UPDATES:
                raise TrainingError(
                    f"{self.run_dir}: step {self.step + 1}: the {part.role}'s gradients were not finite in "
                    f"{part.skipped_in_a_row} updates in a row, so the run diverged (the weights are "
                    "those before); resume from its last checkpoint with a lower optim.learning_rate, or "
                    "check the training data"
                )

    def _log(self, logs: dict[str, Any], steps_per_second: float) -> dict[str, float]:
        scalars: dict[str, float] = {}
        vectors: dict[str, list[float]] = {}
        for name, value in logs.items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                vectors[name] = value.tolist()
            else:
                scalars[name] = float(value)
        scalars[f"lr/{self.model_part.role}"] = self.model_part.lr
        scalars["speed/steps_per_second"] = steps_per_second
        if self.records is not None:
            self.records.log(self.step, scalars, vectors)
        return scalars

    @torch.no_grad()
    def evaluate(self, signals: StopSignals | None = None) -> dict:
        """The task's evaluation of the EMA model on the validation clips (rank 0; the others wait).

        Appends ``{"step": ..., **record}`` to ``eval.jsonl`` and logs TensorBoard scalars and examples;
        RNG states are left as they were. Returns that line (``{}`` on other ranks or without clips, and
        when a stop signal of ``signals`` cut the evaluation short: nothing is logged then).
        """

        def run() -> dict:
            if not self.validation:
                return {}
            saved = rng_state()
            model = self.ema.module.eval()
            try:
                with signals.interruptible() if signals else contextlib.nullcontext():
                    evaluation = self.task.evaluate(model, self.validation)
            except StopRequested:
                evaluation = None
            finally:
                set_rng_state(saved)
            if evaluation is None:
                return {}
            records = (evaluation.record, evaluation.scalars, evaluation.examples)
            self.records.log_evaluation(self.step, *records)
            return {"step": self.step, **evaluation.record}

        return self.runtime.on_main(run) or {}  # the others wait; a failed evaluation stops them too

    # -- the loop -----------------------------------------------------------------------------------
    def _evaluated_here(self) -> bool:
        """Whether the run needs no evaluation at the step it starts from: step 0, or ``eval.jsonl`` holds
        one (a resumed run whose evaluation there a stop signal dropped makes it up). Rank 0 reads the
        records and every rank takes its answer, so that all run the evaluation's barrier or none."""
        missing = self.is_main and self.step > 0 and not evaluated(self.run_dir, self.step)
        return not bool(self.runtime.max(torch.tensor([float(missing)]))[0])

    def _stop_reason(self, signals: StopSignals, start: float, max_minutes: float | None) -> str | None:
        """The stop signal's name (``"SIGINT"``, ``"SIGTERM"``, ``"SIGHUP"``) once one arrived (on any
        rank), ``"max_minutes"`` when the session's time is up, else None; under DDP every rank gets the
        same answer at the same step."""
        out_of_time = max_minutes is not None and time.monotonic() - start >= 60.0 * max_minutes
        received = signal.Signals[signals.received].value if signals.received else 0
        flags = self.runtime.max(torch.tensor([float(out_of_time), float(received)]))
        if flags[1]:
            return signal.Signals(int(flags[1])).name
        return "max_minutes" if flags[0] else None

    def fit(self, max_steps: int | None = None, max_minutes: float | None = None) -> TrainResult:
        """Train until ``max_steps`` (default ``run.max_steps``) or ``max_minutes`` of wall time.

        These limits stop this session only; the LR schedule follows the recipe. Checkpoints are
        written every ``run.checkpoint_every`` steps and when the session stops; evaluation runs
        every ``eval.every_steps`` steps and at the end. SIGINT, SIGTERM or SIGHUP stops the session after
        the current step with a checkpoint, without the final evaluation (``stopped`` names the signal);
        one that comes during an evaluation drops that evaluation at once (a ``--resume`` at that step
        makes it up, even with no step left to train).
        """
        if self.run_lock_released:  # a second fit of this Trainer (the same on every rank)
            self.run_lock = self.runtime.on_main(lambda: RunLock(self.run_dir))
            self.run_lock_released = False
        if self.records is not None:  # this fit's end is yet to be recorded (a second fit too)
            self.records.ended = False
        try:
            with StopSignals() as signals:
                return self._fit(signals, max_steps, max_minutes)
        except BaseException as exc:  # the session's end is recorded; only a killed one has none
            if self.records is not None and not self.records.ended:
                with contextlib.suppress(OSError):  # the error that stopped it is the one to say
                    self.records.end_session(self.step, f"error ({type(exc).__name__})")
            raise
        finally:  # the session has ended: another Trainer (a --resume) may take the run
            if self.run_lock is not None:
                self.run_lock.close()
            self.run_lock_released = True

    def _fit(self, signals: StopSignals, max_steps: int | None, max_minutes: float | None) -> TrainResult:
        run = self.recipe.run
        max_steps = run.max_steps if max_steps is None else max_steps
        max_minutes = run.max_minutes if max_minutes is None else max_minutes
        start = time.monotonic()
        result = TrainResult(step=self.step, stopped="max_steps")
        saved_at = self.step
        evaluated_at = self.step if self._evaluated_here() else -1
        validating = self.recipe.data.valid is not None
        stream = batches(self.dataset, self.step, self.recipe.data.num_workers)
        shown_progress = not self.quiet and self.is_main
        if shown_progress and self.step >= max_steps:  # --max-steps is where to stop, not how many
            print(
                f"audiokit train: {self.run_dir} is at step {self.step}, at or past the step to stop at "
                f"({max_steps}: --max-steps or run.max_steps, a step, not a count); nothing to train",
                file=sys.stderr,
            )
        on_terminal = sys.stderr.isatty()
        # a bar on a terminal; in a log or a pipe, a plain line a minute instead of its \r redraws
        bar = tqdm(
            total=max_steps,
            initial=self.step,
            desc="train",
            disable=not (shown_progress and on_terminal),
            dynamic_ncols=True,
        )
        line_at = time.monotonic()
        window_start, window_steps = time.monotonic(), 0
        while self.step < max_steps:
            reason = self._stop_reason(signals, start, max_minutes)
            if reason is not None:
                result.stopped = reason
                break
            try:
                try:
                    logs = self.train_step(next(stream))
                except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError (a GPU's) is one too
                    if out_of_memory(exc) is None:
                        raise
                    raise self._out_of_memory(exc, saved_at) from None
            except TrainingError as exc:
                bar.close()
                if self.records is not None:
                    self.records.flush()
                    self.records.end_session(
                        self.step, "out of memory" if isinstance(exc, OutOfMemory) else "diverged"
                    )
                raise
            self.step += 1
            window_steps += 1
            bar.update(1)
            if self.step % run.log_every == 0 or self.step == max_steps:
                speed = window_steps / max(time.monotonic() - window_start, 1e-9)
                result.losses = self._log(logs, speed)
                window_start, window_steps = time.monotonic(), 0
                shown = {
                    k.split("/")[1]: f"{v:.3g}" for k, v in result.losses.items() if k.startswith("loss/")
                }
                bar.set_postfix(shown, refresh=False)
                if shown_progress and not on_terminal and time.monotonic() - line_at >= LOG_LINE_SECONDS:
                    losses = " ".join(f"{k} {v}" for k, v in shown.items())
                    print(
                        f"train: step {self.step}/{max_steps}, {speed:.3g} steps/s, {losses}", file=sys.stderr
                    )
                    line_at = time.monotonic()
            if self.step % run.checkpoint_every == 0:
                self.save()
                saved_at = self.step
            if self.step % self.recipe.eval.every_steps == 0 and validating:
                result.evaluations += [e for e in [self.evaluate(signals)] if e]
                evaluated_at = self.step
        bar.close()
        if saved_at != self.step or not (self.run_dir / CHECKPOINT).is_file():
            self.save()
        interrupted = result.stopped in StopSignals.NAMES
        if evaluated_at != self.step and validating and not interrupted:
            result.evaluations += [e for e in [self.evaluate(signals)] if e]
            if signals.received:  # the final evaluation was dropped for it; the checkpoint is saved
                result.stopped = signals.received
        self.runtime.barrier()
        result.step = self.step
        if self.records is not None:
            self.records.flush()
            self.records.end_session(self.step, result.stopped)
        return result

    def _out_of_memory(self, exc: RuntimeError | MemoryError, saved_at: int) -> OutOfMemory:
        """The one-line error of a training step that ran out of memory (``exc``), naming what sets
        the step's size; the run keeps the checkpoint at ``saved_at`` (if any)."""
        data = self.recipe.data
        kept = (
            f"the checkpoint at step {saved_at} is kept (--resume with a smaller batch goes on from it)"
            if (self.run_dir / CHECKPOINT).is_file()
            else "nothing was saved"
        )
        return OutOfMemory(
            f"{self.run_dir}: out of memory in step {self.step + 1} on {self.recipe.run.device} "
            f"({out_of_memory(exc)}) with data.batch_size={data.batch_size} and "
            f"data.segment_seconds={data.segment_seconds:g}: lower them (--set data.batch_size=N); {kept}"
        )

    def close(self) -> None:
        """End a session that never trained (``stopped: closed``), close the TensorBoard writer and let
        the run directory go (:mod:`audiokit.train.run_lock`)."""
        try:
            if self.records is not None:
                if not self.records.ended:  # Trainer() without fit(): not a killed session
                    self.records.end_session(self.step, "closed")
                self.records.close()
        finally:
            if self.run_lock is not None:
                self.run_lock.close()
            self.run_lock_released = True  # a later fit() takes the run again
