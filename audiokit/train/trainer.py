"""The training loop for codecs: generator + discriminators, balancer, EMA, checkpoints, eval, DDP.

One step: draw the batch for this step (see :mod:`audiokit.train.data`), run the codec, compute the
reconstruction losses (and, from ``discriminator.start_step``, adversarial and feature-matching
losses) on a detached copy of the output, combine their gradients w.r.t. the output through the
:class:`~audiokit.losses.Balancer` (or plain weights), and back-propagate that gradient together with
the quantizer losses in a single backward pass (so DDP sees one backward per step). Then clip,
step the optimiser and LR schedule, update the EMA weights, and (every ``update_every`` steps after
the start step) update the discriminators on real and decoded audio.

Launched under ``torchrun`` (``WORLD_SIZE > 1``), every process joins an ``env://`` process group
(NCCL on CUDA, gloo on CPU), draws its own batches, and only rank 0 writes logs, checkpoints and
evaluations.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from audiokit import metrics
from audiokit.dsp import mel_spectrogram
from audiokit.errors import ModelError, RecipeError, UsageError
from audiokit.io import atomic_path
from audiokit.losses import (
    Balancer,
    CombinedDiscriminator,
    CompressedComplexSTFTLoss,
    MultiBandMultiResolutionDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    PhaseDerivativeLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    time_l1_loss,
)
from audiokit.models import CONFIGS, Codec, CodecConfig
from audiokit.models.growth import grow_to
from audiokit.provenance import git_commit, package_versions
from audiokit.train.checkpoint import RUN_CHECKPOINT as CHECKPOINT
from audiokit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from audiokit.train.data import CropDataset, batches, load_validation, read_clips
from audiokit.train.ema import EMA
from audiokit.train.recipe import DiscriminatorConfig, ModelConfig, Recipe, ScheduleConfig, dump_recipe

DISCRIMINATORS = {
    "msstft": MultiScaleSTFTDiscriminator,
    "mpd": MultiPeriodDiscriminator,
    "mrd": MultiBandMultiResolutionDiscriminator,
}
BALANCED_LOSSES = ("mel", "stft", "complex", "phase", "waveform", "adversarial", "feature_matching")


def build_model(config: ModelConfig, where: str = "recipe") -> Codec:
    """An untrained :class:`Codec` of the registered config ``config.config`` with ``config.options``."""
    if config.config not in CONFIGS:
        close = difflib.get_close_matches(config.config, list(CONFIGS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(CONFIGS)}"
        raise RecipeError(f"{where}: unknown codec config 'model.config: {config.config}'; {hint}")
    valid = [f.name for f in dataclasses.fields(CodecConfig) if f.name != "name"]
    for key in config.options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
            raise RecipeError(f"{where}: unknown key 'model.options.{key}'{hint}")
    try:
        return Codec.from_config(config.config, **config.options)
    except (TypeError, ValueError, ModelError) as exc:
        raise RecipeError(f"{where}: model.options do not build a codec ({exc})") from None


def build_discriminator(config: DiscriminatorConfig, channels: int) -> nn.Module | None:
    """The discriminators of ``config.kinds`` combined into one module (``None`` when there are none)."""
    if not config.kinds:
        return None
    parts = []
    for kind in config.kinds:
        options = config.options.get(kind, {})
        try:
            parts.append(DISCRIMINATORS[kind](channels=channels, **options))
        except (TypeError, ValueError) as exc:
            raise RecipeError(
                f"recipe: 'discriminator.options.{kind}' {options} do not build it ({exc})"
            ) from None
    return CombinedDiscriminator(*parts)


def lr_factor(schedule: ScheduleConfig, total_steps: int):
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


def _discriminators_trained(state: dict) -> bool:
    """Whether a checkpoint's discriminators have had an update (a step at or after their start).

    Until then they hold only their initialisation, so a resume may change their kinds and options
    (or start them earlier) and begins with fresh ones.
    """
    started = state["recipe"]["discriminator"]["start_step"]
    return "discriminator" in state and state["step"] > started


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; under torchrun, ``cuda`` means this process's ``LOCAL_RANK``."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def _hardware(device: torch.device) -> str:
    """What the session trains on, in words: the GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What a :meth:`Trainer.fit` call did: final step, why it stopped, last losses and evaluations."""

    step: int
    stopped: str
    losses: dict[str, float] = field(default_factory=dict)
    evaluations: list[dict] = field(default_factory=list)


class Trainer:
    """Train a codec as ``recipe`` says, in ``run_dir``.

    Args:
        recipe: the checked recipe.
        run_dir: where the resolved recipe, ``run.json``, checkpoints, TensorBoard logs,
            ``metrics.jsonl`` and ``eval.jsonl`` go.
        resume: continue from ``run_dir/checkpoints/latest.pt`` (exactly: weights, optimisers,
            schedulers, EMA, balancer, RNG states and data position).
        init: start from the weights of a training checkpoint (its EMA weights) or of a
            ``.safetensors`` model / shipped model name, with fresh optimisers at step 0.
        quiet: no progress bar.
        model: a ready model instead of ``build_model(recipe.model)`` (it must satisfy the codec
            interface: ``sample_rate``, ``channels``, ``bitrates``, ``encode``, ``decode``, ``forward``).
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path,
        resume: bool = False,
        init: str | Path | None = None,
        quiet: bool = False,
        model: nn.Module | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self._signal: str | None = None  # set by SIGINT/SIGTERM during fit()
        run = recipe.run
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = resolve_device(run.device)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world_size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", init_method="env://")
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        self.is_main = self.rank == 0
        checkpoint_path = self.run_dir / CHECKPOINT
        if resume and not checkpoint_path.is_file():
            raise UsageError(f"{checkpoint_path}: nothing to resume (no checkpoint in the run directory)")
        if not resume and checkpoint_path.is_file():
            raise UsageError(
                f"{self.run_dir}: already holds a checkpoint; pass --resume to continue it or choose "
                "another --run-dir"
            )

        _seed_all(run.seed)  # identical initial weights on every rank
        self.model = (model if model is not None else build_model(recipe.model)).to(self.device)
        self.init_sha256 = None  # of the weights as read, before any growth
        self.init_grown_to: dict | None = None  # the decoder they were grown to, if they were
        if init is not None:
            self._load_init(init)
            if self.init_sha256 is None and hasattr(self.model, "weights_sha256"):
                self.init_sha256 = self.model.weights_sha256()
        self._check_bitrates()
        self.ema = EMA(self.model, recipe.optim.ema_decay)
        self.discriminator = build_discriminator(recipe.discriminator, self.model.channels)
        if self.discriminator is not None:
            self.discriminator.to(self.device)
        self._build_losses()
        self._build_optimizers()
        self.train_model: nn.Module = self.model
        self.train_discriminator = self.discriminator
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = {"device_ids": ids, "find_unused_parameters": run.find_unused_parameters}
            with warnings.catch_warnings():
                # the quantizer keeps its buffers equal on all ranks itself (it all-reduces its
                # statistics); torch 2.13 deprecates broadcast_buffers and would warn every user
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
                self.train_model = DistributedDataParallel(self.model, broadcast_buffers=False, **ddp)
            if self.discriminator is not None:
                self.train_discriminator = DistributedDataParallel(self.discriminator, **ddp)
        _seed_all(run.seed + self.rank)

        self.step = 0
        self.dataset = self._build_dataset()
        self.validation = self._load_validation() if self.is_main else []
        self.writer = None
        if resume:
            self._restore(load_checkpoint(checkpoint_path))
        if self.is_main:
            self._write_run_files(resume, init)
            self.writer = self._open_writer()

    # -- construction -----------------------------------------------------------------------------
    def _check_bitrates(self) -> None:
        supported = [round(b, 6) for b in self.model.bitrates]
        for bitrate in self.recipe.eval.bitrates:
            if round(bitrate, 6) not in supported:
                listed = ", ".join(f"{b:g}" for b in supported)
                raise RecipeError(
                    f"eval.bitrates: {bitrate:g} b/s is not supported by this model; choose from {listed}"
                )

    def _build_losses(self) -> None:
        cfg = self.recipe.losses
        self.weights = {name: getattr(cfg, name) for name in BALANCED_LOSSES}
        self.mel_loss = MultiScaleMelLoss(
            self.model.sample_rate, window_lengths=cfg.mel_window_lengths, n_mels=cfg.mel_bins
        ).to(self.device)
        fft, hop, win = zip(*cfg.stft_resolutions, strict=True) if cfg.stft_resolutions else ((), (), ())
        self.stft_loss = MultiResolutionSTFTLoss(fft, hop, win).to(self.device)
        self.complex_loss = CompressedComplexSTFTLoss(fft, hop, win, cfg.complex_exponent).to(self.device)
        self.phase_loss = PhaseDerivativeLoss(fft, hop, win, cfg.phase_exponent).to(self.device)
        self.balancer = (
            Balancer(self.weights, ema_decay=cfg.balancer_ema_decay)
            if cfg.balancer and sum(self.weights.values()) > 0
            else None
        )

    def _build_optimizers(self) -> None:
        o, s = self.recipe.optim, self.recipe.schedule
        total = s.total_steps or self.recipe.run.max_steps
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), o.learning_rate, betas=tuple(o.betas), weight_decay=o.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(s, total))
        self.disc_optimizer = self.disc_scheduler = None
        if self.discriminator is not None:
            self.disc_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(), o.disc_learning_rate, betas=tuple(o.disc_betas)
            )
            # the discriminator schedule advances once per discriminator update, not per step
            disc = self.recipe.discriminator

            def disc_updates(steps: int) -> int:
                return max(1, math.ceil(steps / disc.update_every))

            disc_total = disc_updates(total - disc.start_step)
            disc_schedule = s
            if s.cooldown_start is not None:
                disc_schedule = dataclasses.replace(
                    s,
                    cooldown_start=max(s.warmup_steps, disc_updates(s.cooldown_start - disc.start_step)),
                    cooldown_steps=disc_updates(s.cooldown_steps),
                )
            self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.disc_optimizer, lr_factor(disc_schedule, disc_total)
            )

    def _build_dataset(self) -> CropDataset:
        d = self.recipe.data
        noise = read_clips(d.noise, "*", key="data.noise") if d.noise and d.noise_probability > 0 else None
        clips = read_clips(d.train, d.glob, key="data.train")
        return CropDataset(
            clips, self.model.sample_rate, self.model.channels, d, self.recipe.run.seed, self.rank, noise
        )

    def _load_validation(self) -> list[tuple[str, torch.Tensor]]:
        d, e = self.recipe.data, self.recipe.eval
        if d.valid is None:
            return []
        return load_validation(
            d.valid, self.model.sample_rate, self.model.channels, d.glob, e.max_files, e.max_seconds
        )

    def _load_init(self, init: str | Path) -> None:
        path = Path(init)
        if path.suffix == ".pt":
            state = load_checkpoint(path)
            weights = state["ema"]["module"] if "ema" in state else state["model"]
        else:
            init_codec = Codec.from_pretrained(init)
            self.init_sha256 = init_codec.weights_sha256()
            if isinstance(self.model, Codec) and init_codec.config.decoder != self.model.config.decoder:
                try:
                    init_codec = grow_to(init_codec, self.model.config)
                except ModelError as exc:
                    raise UsageError(f"--init {init}: weights do not fit the recipe ({exc})") from None
                self.init_grown_to = init_codec.config.decoder
                if self.is_main and not self.quiet:
                    print(f"--init {init}: decoder grown, function-preserving, to {self.init_grown_to}")
            weights = init_codec.state_dict()
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            message = " ".join(str(exc).split())[:300]
            raise UsageError(f"--init {init}: weights do not fit the recipe's model ({message})") from None

    def _open_writer(self):
        if not self.recipe.run.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def _write_run_files(self, resume: bool, init: str | Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.run_dir / "recipe.yaml") as tmp:
            tmp.write_text(dump_recipe(self.recipe))
        info_path = self.run_dir / "run.json"
        info = json.loads(info_path.read_text()) if resume and info_path.is_file() else {"sessions": []}
        info.update({"seed": self.recipe.run.seed, "model": getattr(self.model, "name", None)})
        info["sessions"].append(
            {
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "start_step": self.step,
                "resumed": resume,
                "init": str(init) if init else None,
                "init_sha256": self.init_sha256,
                **({"init_grown_to": self.init_grown_to} if self.init_grown_to else {}),
                "command": sys.argv,
                "commit": git_commit(),
                "versions": package_versions(),
                "device": str(self.device),
                "hardware": _hardware(self.device),
                "threads": torch.get_num_threads(),
                "world_size": self.world_size,
                "host": platform.node(),
            }
        )
        with atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")

    def _end_session(self, stopped: str) -> None:
        """Record when and at which step this session ended, and why, in ``run.json``."""
        info_path = self.run_dir / "run.json"
        info = json.loads(info_path.read_text())
        ended = {"ended": datetime.now(timezone.utc).isoformat(timespec="seconds"), "end_step": self.step}
        info["sessions"][-1].update(ended, stopped=stopped)
        with atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (see :mod:`audiokit.train.checkpoint`)."""
        rng = [rng_state()]
        if self.world_size > 1:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, rng_state())
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizers": {"generator": self.optimizer.state_dict()},
            "schedulers": {"generator": self.scheduler.state_dict()},
            "balancer": self.balancer.state_dict() if self.balancer else None,
            "rng": rng,
            "data": {"next_step": self.step, "seed": self.recipe.run.seed, "world_size": self.world_size},
            "recipe": dataclasses.asdict(self.recipe),
        }
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["optimizers"]["discriminator"] = self.disc_optimizer.state_dict()
            state["schedulers"]["discriminator"] = self.disc_scheduler.state_dict()
        return state

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizers"]["generator"])
            self.scheduler.load_state_dict(state["schedulers"]["generator"])
            if self.discriminator is not None and _discriminators_trained(state):
                self.discriminator.load_state_dict(state["discriminator"])
                self.disc_optimizer.load_state_dict(state["optimizers"]["discriminator"])
                self.disc_scheduler.load_state_dict(state["schedulers"]["discriminator"])
        except (KeyError, RuntimeError, ValueError) as exc:
            message = " ".join(str(exc).split())[:300]
            raise UsageError(f"{self.run_dir / CHECKPOINT}: does not fit this recipe ({message})") from None
        self._apply_recipe_rates()
        if self.balancer is not None and state.get("balancer"):
            self.balancer.load_state_dict(state["balancer"])
        if state["data"]["world_size"] != self.world_size:
            raise UsageError(
                f"{self.run_dir / CHECKPOINT}: written by {state['data']['world_size']} processes; "
                f"resume with the same number (got {self.world_size})"
            )
        self.step = int(state["data"]["next_step"])
        set_rng_state(state["rng"][self.rank])

    def _apply_recipe_rates(self) -> None:
        """After a restore, rate the optimisers by this recipe's base rates and schedule, which a
        ``--resume --set`` may have changed (the scheduler states restore the old base rates)."""
        o = self.recipe.optim
        pairs = [(self.optimizer, self.scheduler, o.learning_rate)]
        if self.discriminator is not None:
            pairs.append((self.disc_optimizer, self.disc_scheduler, o.disc_learning_rate))
        for optimizer, scheduler, rate in pairs:
            scheduler.base_lrs = [rate] * len(optimizer.param_groups)
            for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
                group["initial_lr"] = rate
                group["lr"] = rate * factor(scheduler.last_epoch)

    def save(self) -> None:
        """Write ``checkpoints/latest.pt`` (and ``step_N.pt`` every ``keep_every`` steps) on rank 0."""
        state = self.state_dict()  # collective under DDP: every rank takes part
        if self.is_main:
            path = save_checkpoint(self.run_dir / CHECKPOINT, state)
            keep = self.recipe.run.keep_every
            if keep and self.step % keep == 0:
                save_checkpoint(path.with_name(f"step_{self.step:08d}.pt"), state)
            if hasattr(self.ema.module, "save_pretrained"):
                self.ema.module.save_pretrained(self.run_dir / "model.safetensors", extra={"step": self.step})
        self._barrier()

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda" and self.recipe.run.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _discriminators_active(self) -> bool:
        cfg = self.recipe.losses
        if self.discriminator is None or not (cfg.adversarial or cfg.feature_matching):
            return False
        return self.step >= self.recipe.discriminator.start_step

    def _generator_adversarial_active(self) -> bool:
        disc = self.recipe.discriminator
        return self._discriminators_active() and self.step >= disc.start_step + disc.warmup_steps

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One generator update (and discriminator update when due); returns detached scalars."""
        cfg = self.recipe.losses
        x = batch["input"].to(self.device, non_blocking=True)
        self.model.train()
        with self._autocast():
            out = self.train_model(x)
        audio = out.audio.float()
        proxy = audio.detach().requires_grad_()
        losses: dict[str, torch.Tensor] = {}
        if cfg.mel:
            losses["mel"] = self.mel_loss(proxy, x)
        if cfg.stft:
            losses["stft"] = self.stft_loss(proxy, x)
        if cfg.complex:
            losses["complex"] = self.complex_loss(proxy, x)
        if cfg.phase:
            losses["phase"] = self.phase_loss(proxy, x)
        if cfg.waveform:
            losses["waveform"] = time_l1_loss(proxy, x)
        if self._generator_adversarial_active():
            with self._autocast():
                fake_logits, fake_features = self.discriminator(proxy)
                with torch.no_grad():
                    _, real_features = self.discriminator(x)
            if cfg.adversarial:
                losses["adversarial"] = generator_loss(fake_logits, cfg.adversarial_kind).float()
            if cfg.feature_matching:
                losses["feature_matching"] = feature_matching_loss(real_features, fake_features).float()
        if self.balancer is not None:
            proxy.grad = None
            self.balancer.backward(losses, proxy)
            output_grad = proxy.grad
        else:
            total = sum(self.weights[name] * value for name, value in losses.items())
            output_grad = torch.autograd.grad(total, [proxy])[0]
        vq = cfg.commitment * out.commitment_loss + cfg.codebook * out.codebook_loss
        if vq.requires_grad:
            torch.autograd.backward([audio, vq], [output_grad, None])
        else:
            audio.backward(output_grad)
        clip = self.recipe.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)

        logs = {f"loss/{name}": value.detach() for name, value in losses.items()}
        logs["loss/commitment"] = out.commitment_loss.detach()
        logs["loss/codebook"] = out.codebook_loss.detach()
        logs["grad_norm/generator"] = grad_norm.detach()
        for name, value in out.metrics.items():
            logs[f"codebook/{name}_mean"] = value.detach().float().mean()
        logs["codebook/usage_per_codebook"] = metrics.codebook_usage(
            out.codes.detach(), self.model.codebook_size
        )
        due = (self.step - self.recipe.discriminator.start_step) % self.recipe.discriminator.update_every == 0
        if self._discriminators_active() and due:
            logs.update(self._discriminator_step(x, audio.detach()))
        return logs

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = real.shape[0]
        with self._autocast():
            logits, _ = self.train_discriminator(torch.cat([real, fake]))
        loss = discriminator_loss(
            [lg[:batch].float() for lg in logits],
            [lg[batch:].float() for lg in logits],
            self.recipe.losses.adversarial_kind,
        )
        loss.backward()
        clip = self.recipe.optim.disc_grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), clip)
        self.disc_optimizer.step()
        self.disc_scheduler.step()
        self.disc_optimizer.zero_grad(set_to_none=True)
        return {"loss/discriminator": loss.detach(), "grad_norm/discriminator": grad_norm.detach()}

    # -- logging and evaluation -------------------------------------------------------------------
    def _log(self, logs: dict[str, torch.Tensor], steps_per_second: float) -> dict[str, float]:
        scalars = {k: float(v) for k, v in logs.items() if v.numel() == 1}
        scalars["lr/generator"] = self.scheduler.get_last_lr()[0]
        if self.disc_scheduler is not None:
            scalars["lr/discriminator"] = self.disc_scheduler.get_last_lr()[0]
        if self.balancer is not None:
            scalars.update({f"balancer/{k}": v for k, v in self.balancer.metrics.items()})
        scalars["speed/steps_per_second"] = steps_per_second
        usage = logs["codebook/usage_per_codebook"]
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"step": self.step, **scalars}) + "\n")
            if self.writer is not None:
                for name, value in scalars.items():
                    self.writer.add_scalar(name, value, self.step)
                for q, value in enumerate(usage.tolist()):
                    self.writer.add_scalar(f"codebook_usage/q{q:02d}", value, self.step)
        return scalars

    @torch.no_grad()
    def evaluate(self) -> dict:
        """PESQ, STOI and mel distance of the EMA model on the validation clips at each bitrate.

        Runs on rank 0 (other ranks wait); appends a line to ``eval.jsonl`` and logs TensorBoard
        scalars, audio examples and log-mel images. RNG states are left as they were.
        """
        result: dict = {}
        if self.is_main and self.validation:
            saved = rng_state()
            model = self.ema.module
            model.eval()
            rate = model.sample_rate
            bitrates = self.recipe.eval.bitrates or model.bitrates
            result = {"step": self.step, "bitrates": {}}
            for bitrate in bitrates:
                rows = []
                for index, (name, wav) in enumerate(self.validation):
                    decoded = model.decode(model.encode(wav[None].to(self.device), bitrate))[0].float().cpu()
                    for ref, est in zip(wav.double(), decoded.double(), strict=True):
                        rows.append(
                            {
                                "pesq": metrics.pesq(ref, est, rate).score,
                                "stoi": metrics.stoi(ref, est, rate),
                                "mel_distance": metrics.mel_distance(ref, est, rate),
                            }
                        )
                    if bitrate == max(bitrates) and index < self.recipe.eval.audio_examples:
                        self._log_example(name, wav, decoded, rate)
                means = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
                result["bitrates"][f"{bitrate:g}"] = means
                if self.writer is not None:
                    for metric, value in means.items():
                        self.writer.add_scalar(f"eval/{metric}@{bitrate / 1000:g}kbps", value, self.step)
            with open(self.run_dir / "eval.jsonl", "a") as fh:
                fh.write(json.dumps(result) + "\n")
            set_rng_state(saved)
        self._barrier()
        return result

    def _log_example(self, name: str, reference: torch.Tensor, decoded: torch.Tensor, rate: int) -> None:
        if self.writer is None:
            return
        for tag, wav in (("reference", reference), ("decoded", decoded)):
            self.writer.add_audio(f"audio/{name}/{tag}", wav[0].clamp(-1, 1), self.step, sample_rate=rate)
            mel = mel_spectrogram(wav[0].double(), rate, 1024, 256, 80).clamp_min(1e-5).log10()
            image = ((mel - mel.min()) / (mel.max() - mel.min() + 1e-9)).flip(0).float()
            self.writer.add_image(f"mel/{name}/{tag}", image, self.step, dataformats="HW")

    # -- the loop ---------------------------------------------------------------------------------
    def _stop_reason(self, start: float, max_minutes: float | None) -> str | None:
        """``"SIGINT"``/``"SIGTERM"`` once such a signal arrived (on any rank), ``"max_minutes"`` when the
        session's time is up, else None; under DDP every rank gets the same answer at the same step."""
        out_of_time = max_minutes is not None and time.monotonic() - start >= 60.0 * max_minutes
        received = signal.Signals[self._signal].value if self._signal else 0
        flags = torch.tensor([float(out_of_time), float(received)])
        if self.world_size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[1]:
            return signal.Signals(int(flags[1])).name
        return "max_minutes" if flags[0] else None

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """While training, SIGINT and SIGTERM end the session after the current step, with a checkpoint;
        a second one acts as usual (the checkpoint on disk is always complete: writes are atomic)."""
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def stop(signum: int, frame: object) -> None:
            self._signal = signal.Signals(signum).name
            signal.signal(signum, previous[signum])

        for sig in previous:
            signal.signal(sig, stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fit(self, max_steps: int | None = None, max_minutes: float | None = None) -> TrainResult:
        """Train until ``max_steps`` (default ``run.max_steps``) or ``max_minutes`` of wall time.

        These limits stop this session only; the LR schedule follows the recipe. Checkpoints are
        written every ``run.checkpoint_every`` steps and when the session stops; evaluation runs
        every ``eval.every_steps`` steps and at the end. SIGINT or SIGTERM stops the session after
        the current step with a checkpoint, without the final evaluation (``stopped`` names the signal).
        """
        with self._stop_on_signals():
            return self._fit(max_steps, max_minutes)

    def _fit(self, max_steps: int | None, max_minutes: float | None) -> TrainResult:
        run = self.recipe.run
        max_steps = run.max_steps if max_steps is None else max_steps
        max_minutes = run.max_minutes if max_minutes is None else max_minutes
        start = time.monotonic()
        result = TrainResult(step=self.step, stopped="max_steps")
        saved_at = evaluated_at = self.step
        stream = batches(self.dataset, self.step, self.recipe.data.num_workers)
        bar = tqdm(
            total=max_steps,
            initial=self.step,
            desc="train",
            disable=self.quiet or not self.is_main,
            dynamic_ncols=True,
        )
        window_start, window_steps = time.monotonic(), 0
        while self.step < max_steps:
            reason = self._stop_reason(start, max_minutes)
            if reason is not None:
                result.stopped = reason
                break
            logs = self.train_step(next(stream))
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
            if self.step % run.checkpoint_every == 0:
                self.save()
                saved_at = self.step
            if self.step % self.recipe.eval.every_steps == 0 and self.recipe.data.valid is not None:
                result.evaluations.append(self.evaluate())
                evaluated_at = self.step
        bar.close()
        if saved_at != self.step or not (self.run_dir / CHECKPOINT).is_file():
            self.save()
        interrupted = result.stopped in ("SIGINT", "SIGTERM")
        if evaluated_at != self.step and self.recipe.data.valid is not None and not interrupted:
            result.evaluations.append(self.evaluate())
        self._barrier()
        result.step = self.step
        if self.writer is not None:
            self.writer.flush()
        if self.is_main:
            self._end_session(result.stopped)
        return result

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
