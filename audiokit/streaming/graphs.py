"""Streaming steps replayed from CUDA graphs: one launch per step instead of one per operation.

A step of many streams on a GPU is bound by launching its hundreds of small kernels, not by the
arithmetic. :class:`GraphedStep` records a step once per chunk shape as a CUDA graph and replays it:
the chunk and the state live in static buffers that the graph reads and rewrites in place. The
session's state object keeps pointing at those buffers between replays, so the session's other
operations on it (resetting rows in place, eager final steps that replace its tensors) stay valid:
before each replay, any state tensor that is no longer the graph's buffer is copied into it. Steps on
any other state object (the gathered rows of part of the streams) and final steps run eagerly.

A graph reads raw addresses: besides the parameters, it reads what the model's blocks cached for
their steps (prepared weight layouts, masks), which a later session on the same model may replace.
:class:`GraphedStep` keeps a reference to every such cache it recorded with (``model``), so they live
as long as the graph. Where recording fails (an operation that synchronises with the host, caught
during the warm-up, say), the step runs eagerly from then on and :attr:`GraphedStep.failure` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from audiokit.nn.state import StreamState, assign_state_tensors, state_tensors, with_state_tensors

WARMUP_STEPS = 2  # on copies of the state, before recording (lazy library initialisation happens there)
MAX_GRAPHS = 4  # chunk shapes recorded per step; others run eagerly
STEP_CACHES = ("_prepared", "_step_masks")
"""Attributes in which blocks keep what their steps read besides parameters (see the module docstring)."""


def record_cuda_graph(run: Callable[[], list[torch.Tensor]], warmup: Callable[[], object]) -> Callable:
    """``run`` recorded as a CUDA graph after ``warmup`` ran :data:`WARMUP_STEPS` times on a side
    stream (with host synchronisation an error, so that a step that cannot be recorded fails there,
    before any capture starts); returns ``replay() -> outputs`` (the same static tensors each time)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                warmup()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = run()

    def replay() -> list[torch.Tensor]:
        graph.replay()
        return outputs

    return replay


@dataclass
class _Recorded:
    """One recorded chunk shape: its replay function and static chunk and state buffers."""

    replay: Callable[[], list[torch.Tensor]]
    chunk: torch.Tensor
    buffers: list[torch.Tensor]


class GraphedStep:
    """``step(x, state, final=False)`` replayed from recorded graphs (see the module docstring).

    ``tuple_of``: how many tensors ``step`` returns as a tuple (0: one tensor); ``batch``: record only
    chunks of that many streams (``None``: any); ``model``: the module whose blocks' step caches the
    graphs must keep alive. ``record(run, warmup)`` makes the replay function (default
    :func:`record_cuda_graph`); it is a parameter so that the bookkeeping can be checked without a GPU.
    """

    def __init__(
        self,
        step: Callable,
        tuple_of: int = 0,
        batch: int | None = None,
        model: nn.Module | None = None,
        record: Callable = record_cuda_graph,
    ) -> None:
        self.step = step
        self.tuple_of = tuple_of
        self.batch = batch
        self.model = model
        self.record = record
        self.failure: str | None = None
        self.replays = 0
        self._state: StreamState | None = None  # the state object the graphs step
        self._graphs: dict[tuple[int, ...], _Recorded] = {}
        self._kept: list = []  # the step caches the graphs read

    def __call__(
        self, x: torch.Tensor, state: StreamState | None, final: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        shape = tuple(x.shape)
        if (
            final
            or self.failure is not None
            or (self.batch is not None and shape[0] != self.batch)
            or (self._state is not None and state is not self._state)
            or (shape not in self._graphs and len(self._graphs) >= MAX_GRAPHS)
        ):
            return self.step(x, state, final)
        recorded = self._graphs.get(shape)
        if recorded is None:
            try:
                recorded = self._graphs[shape] = self._record(x, state)
            except Exception as exc:  # noqa: BLE001 - any failure to record means: run eagerly
                cause = exc.__context__ or exc
                lines = str(cause).strip().splitlines()
                self.failure = f"{type(cause).__name__}: {lines[0] if lines else ''}"
                return self.step(x, state, final)
            self._state = state
        current = state_tensors(state)
        if [t.shape for t in current] != [b.shape for b in recorded.buffers]:
            return self.step(x, state, final)
        for buffer, tensor in zip(recorded.buffers, current, strict=True):
            if tensor is not buffer:
                buffer.copy_(tensor)
        recorded.chunk.copy_(x)
        outputs = [out.clone() for out in recorded.replay()]
        assign_state_tensors(state, iter(recorded.buffers))
        self.replays += 1
        return tuple(outputs) if self.tuple_of else outputs[0]

    def _record(self, x: torch.Tensor, state: StreamState | None) -> _Recorded:
        chunk = x.clone()
        buffers = [t.clone() for t in state_tensors(state)]
        template = state

        def run() -> list[torch.Tensor]:
            """One step on the static buffers, its new state written back into them."""
            work = with_state_tensors(template, iter(buffers))
            out = self.step(chunk, work)
            # a new state tensor that views a buffer is copied out first: buffers are overwritten below
            storages = {b.untyped_storage().data_ptr() for b in buffers}
            news = [
                new.clone() if new is not b and new.untyped_storage().data_ptr() in storages else new
                for new, b in zip(state_tensors(work), buffers, strict=True)
            ]
            for buffer, new in zip(buffers, news, strict=True):
                if new is not buffer:
                    buffer.copy_(new)
            return list(out) if self.tuple_of else [out]

        def warmup() -> object:
            return self.step(chunk, with_state_tensors(template, iter([b.clone() for b in buffers])))

        with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
            replay = self.record(run, warmup)
        if self.model is not None:
            self._kept += [
                m.__dict__[name] for m in self.model.modules() for name in STEP_CACHES if name in m.__dict__
            ]
        return _Recorded(replay, chunk, buffers)


def graph_report(*steps: object) -> dict | None:
    """``{"replays", "failure"}`` summed over the :class:`GraphedStep` among ``steps`` (``None`` if none
    is one): whether a session's steps really ran from graphs."""
    graphed = [step for step in steps if isinstance(step, GraphedStep)]
    if not graphed:
        return None
    failures = [step.failure for step in graphed if step.failure is not None]
    return {"replays": sum(step.replays for step in graphed), "failure": failures[0] if failures else None}
