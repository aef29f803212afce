"""Streaming steps replayed from CUDA graphs: one launch per step instead of one per operation.

A step of many streams on a GPU is bound by launching its hundreds of small kernels, not by the
arithmetic. :class:`GraphedStep` records a step once as a CUDA graph and replays it: the chunk and the
state live in static buffers that the graph reads and rewrites in place. The state object keeps pointing
at those buffers between replays, so the session's other operations on it (resetting rows in place,
gathering and scattering rows for part of the streams, eager final steps that replace its tensors) stay
valid: before each replay, any state tensor that is no longer the static buffer is copied into it.

Recorded at the first call on a chunk of a given shape; chunks of other shapes (another number of
streams or frames) and final steps run the step itself. Where recording fails (an operation that
synchronises with the host, say), the step runs eagerly from then on and :attr:`GraphedStep.failure`
says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audiokit.nn.state import StreamState, assign_state_tensors, state_tensors, with_state_tensors

WARMUP_STEPS = 2  # on copies of the state, before recording (lazy library initialisation happens there)


def record_cuda_graph(run: Callable[[], list[torch.Tensor]], warmup: Callable[[], object]) -> Callable:
    """``run`` recorded as a CUDA graph after ``warmup`` ran :data:`WARMUP_STEPS` times on a side
    stream; returns ``replay() -> outputs`` (the same static output tensors at every replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            warmup()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = run()

    def replay() -> list[torch.Tensor]:
        graph.replay()
        return outputs

    return replay


class GraphedStep:
    """``step(x, state, final=False)`` replayed from a recorded graph (see the module docstring).

    ``tuple_of``: how many tensors ``step`` returns as a tuple (0: one tensor); ``batch``: record only
    chunks of that many streams (``None``: the first chunk's). ``record(run, warmup)`` makes the replay
    function (default :func:`record_cuda_graph`); it is a parameter so that the bookkeeping can be
    checked without a GPU.
    """

    def __init__(
        self,
        step: Callable,
        tuple_of: int = 0,
        batch: int | None = None,
        record: Callable = record_cuda_graph,
    ) -> None:
        self.step = step
        self.tuple_of = tuple_of
        self.batch = batch
        self.record = record
        self.failure: str | None = None
        self.replays = 0
        self._shape: tuple[int, ...] | None = None
        self._replay: Callable[[], list[torch.Tensor]] | None = None
        self._chunk: torch.Tensor | None = None
        self._buffers: list[torch.Tensor] = []

    def __call__(
        self, x: torch.Tensor, state: StreamState | None, final: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if final or self.failure is not None or (self.batch is not None and x.shape[0] != self.batch):
            return self.step(x, state, final)
        if self._shape is not None and tuple(x.shape) != self._shape:
            return self.step(x, state, final)
        if self._replay is None:
            try:
                self._record(x, state)
            except Exception as exc:  # noqa: BLE001 - any failure to record means: run eagerly
                lines = str(exc).strip().splitlines()
                self.failure = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                self._shape = None
                return self.step(x, state, final)
        current = state_tensors(state)
        if [t.shape for t in current] != [b.shape for b in self._buffers]:
            return self.step(x, state, final)
        for buffer, tensor in zip(self._buffers, current, strict=True):
            if tensor is not buffer:
                buffer.copy_(tensor)
        self._chunk.copy_(x)
        outputs = [out.clone() for out in self._replay()]
        assign_state_tensors(state, iter(self._buffers))
        self.replays += 1
        return tuple(outputs) if self.tuple_of else outputs[0]

    def _record(self, x: torch.Tensor, state: StreamState | None) -> None:
        self._shape = tuple(x.shape)
        self._chunk = x.clone()
        self._buffers = [t.clone() for t in state_tensors(state)]
        template, chunk, buffers = state, self._chunk, self._buffers

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

        self._replay = self.record(run, warmup)
