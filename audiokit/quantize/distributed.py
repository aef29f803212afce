"""Collectives for codebook statistics: no-ops unless ``torch.distributed`` is initialised.

Every rank must call these in the same order; the quantizers only call them from code paths whose
branching depends on already all-reduced values, so the ranks stay in lock step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is up with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s copy, in place, and return it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor
