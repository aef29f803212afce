"""Where a training process runs: device, threads, seeds, the DDP process group, autocast.

Launched under ``torchrun`` (``WORLD_SIZE > 1``), every process joins an ``env://`` process group
(NCCL on CUDA, gloo on CPU); :meth:`Runtime.wrap` then puts a module under
:class:`~torch.nn.parallel.DistributedDataParallel`.
"""

from __future__ import annotations

import os
import platform
import random
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from audiokit.errors import PeerStopped, UsageError
from audiokit.train.recipe import RunConfig

T = TypeVar("T")

PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")
"""What gloo's errors say when another process of the group has gone (crashed or stopped on an error)."""


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's failure because another process of the group has gone (not any
    ``DistError``: this process's own failure to join the group, a wrong MASTER_ADDR, is one too)."""
    return isinstance(exc, RuntimeError) and any(words in str(exc) for words in PEER_LOST)


def launched_world_size() -> int:
    """How many processes torchrun started for the run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's place among the processes torchrun started on this machine (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_world_size() > 1 else 0


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; under torchrun, ``cuda`` means this process's ``LOCAL_RANK``."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if name == "cuda":
            return torch.device("cuda", local_rank())
    return torch.device(name)


def hardware(device: torch.device) -> str:
    """What the session trains on, in words: the GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """This process's device, rank among ``world_size`` processes, and precision settings."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    bf16: bool = True
    find_unused_parameters: bool = False

    @classmethod
    def start(cls, run: RunConfig) -> Runtime:
        """Set the thread count, pick the device and join the process group under torchrun."""
        if run.threads:
            torch.set_num_threads(run.threads)
        device = resolve_device(run.device)
        world_size = launched_world_size()
        if world_size > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
        rank = dist.get_rank() if world_size > 1 else 0
        return cls(device, rank, world_size, run.bf16, run.find_unused_parameters)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes records, checkpoints and evaluations."""
        return self.rank == 0

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA when ``run.bf16``; nothing on the CPU."""
        if self.device.type == "cuda" and self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def wrap(self, module: nn.Module, broadcast_buffers: bool = True) -> nn.Module:
        """``module`` under DDP when there are several processes, else itself."""
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        with warnings.catch_warnings():
            # torch 2.13 deprecates broadcast_buffers and would warn every user
            warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
            return DistributedDataParallel(
                module,
                device_ids=ids,
                broadcast_buffers=broadcast_buffers,
                find_unused_parameters=self.find_unused_parameters,
            )

    def on_main(self, work: Callable[[], T]) -> T | None:
        """``work()`` on rank 0 (None elsewhere) while the other ranks wait. Under DDP, when it raises
        (a bad file only rank 0 reads, a full disk), rank 0 raises that error and every other rank
        :class:`~audiokit.errors.PeerStopped`, instead of waiting in the next collective for a process
        that is gone (and failing there with gloo's "Connection closed by peer")."""
        result, failed = None, None
        if self.is_main:
            try:
                result = work()
            except BaseException as exc:  # a second Ctrl-C too: the others must not wait for it
                failed = exc
        if self.world_size > 1 and self.max(torch.tensor([float(failed is not None)]))[0]:
            if failed is None:
                raise PeerStopped(f"rank {self.rank}: rank 0 stopped on an error (it says which)")
        if failed is not None:
            raise failed
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (collective under DDP)."""
        if self.world_size == 1:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def max(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``values`` over the ranks (collective under DDP)."""
        if self.world_size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return values
