"""Streaming session of input below a model's rate: an integer-factor FIR upsampler in front of an
:class:`~audiokit.streaming.audio.AudioStream` (a bandwidth extender's 8 kHz input, for one).

Each row's upsampled signal is aligned (the filter's first ``delay`` output samples dropped) and, on
:meth:`UpsampledStream.flush`, completed with the filter's tail (zeros pushed through it) and cut to
exactly ``factor`` times the row's input length: the offline ``upsampler(pad(x))[delay : delay +
factor * T]`` block by block. So the output equals the model's offline output on the upsampled signal
for any chunking, ``factor * T`` samples per row.

Upsampled samples go on to the model's session in whole hops (the rest waits here). So a session fed
whole hops at the input rate settles, after its first push, into a steady state: every row's filter
output aligned, the same ``(-delay) mod hop_length`` samples waiting, the model's session in step
(:meth:`AudioStream.in_step`). There each push is one call of an :class:`UpsampledStep`: the filter,
the waiting samples and the model's step as one function, which ``compile="aoti"`` compiles as one
library (the per-push Python and small tensor operations around the model's step cost as much as
the compiled step itself at one stream).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from audiokit.errors import UsageError
from audiokit.nn.resample import Upsampler
from audiokit.nn.state import (
    ConvState,
    StateList,
    flatten_state,
    load_flat_state,
    row_indices,
    zero_rows,
)
from audiokit.streaming.audio import AudioStream, step_mode
from audiokit.streaming.compiled import HopwiseSteps, compile_hopwise


class UpsampledStep:
    """``step(x, state, final, **options)`` of input at ``1 / upsampler.factor`` of the model's rate:
    ``upsampler``, then the samples waiting for a whole hop, then ``model.step``. ``state``:
    ``StateList([filter ConvState, waiting ConvState (rows, 1, w), model state])``; the waiting samples
    stay ``w`` long when ``factor * n`` is whole hops."""

    def __init__(self, upsampler: Upsampler, model) -> None:
        self.upsampler = upsampler
        self.model = model

    def __call__(self, x: torch.Tensor, state: StateList, final: bool = False, **options) -> torch.Tensor:
        filter_state, waiting, model_state = state.children
        y = self.upsampler.step(x, filter_state)
        joined = torch.cat([waiting.history, y], -1)
        waiting.history = joined[..., y.shape[-1] :]
        return self.model.step(joined[..., : y.shape[-1]], model_state, final, **options)


class UpsampledStream:
    """``inner``'s rows fed through ``upsampler`` (mono, one row per ``inner`` row); chunks are pushed at
    ``1 / upsampler.factor`` of the model's rate. Same ``push``/``flush``/``reset``/``lengths`` contract
    as :class:`AudioStream`; lengths count output (model-rate) samples."""

    def __init__(self, upsampler: Upsampler, inner: AudioStream, compile: bool | str | None = None) -> None:
        self.upsampler = upsampler
        self.inner = inner
        self.factor = upsampler.factor
        self.waiting = -upsampler.delay % inner.hop_length  # samples waiting in the steady state
        self._fused = self._fused_step(compile)
        self.compiled = isinstance(self._fused, HopwiseSteps)  # the steady state's step
        self._fused_mode = step_mode(self._fused)
        self.batch_size, self.channels, self.rows = inner.batch_size, inner.channels, inner.rows
        with torch.inference_mode():
            self.state = upsampler.init_state(self.rows, inner.device, torch.float32)
        # per row: filter output still to drop, input pushed, upsampled samples given to ``inner`` and
        # queued for it (``_queue``: left-aligned rows, each valid up to its ``_queued``)
        self._skip = np.full(self.rows, upsampler.delay, dtype=np.int64)
        self._pushed, self._fed, self._queued = (np.zeros(self.rows, dtype=np.int64) for _ in range(3))
        self._queue = torch.zeros(self.rows, 0, device=inner.device)
        self.lengths: list[int] = [0] * self.rows
        # the steady state's tree for the fused step: the same nodes at every push (compiled steps
        # locate a tree's tensors once), the waiting samples re-pointed at the queue's
        self._waiting = ConvState(self._queue[:, None])
        self._steady_state = StateList([self.state, self._waiting, inner.state])

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Feed ``x (B, C, n)`` at the input rate; returns ``(B, C, m)`` at the model's rate: what every
        row has ready (:attr:`lengths`: ``m`` each)."""
        model = self.inner.model  # float, 3-D and finite at the input rate, before the filter sees it
        shape, rate = f"({self.batch_size}, {self.channels}, samples)", model.sample_rate // self.factor
        x = model.audio_input(x, "push", shape, sample_rate=rate, allow_empty=True)
        if tuple(x.shape[:2]) != (self.batch_size, self.channels):
            raise UsageError(
                f"expected a chunk of shape ({self.batch_size}, {self.channels}, n), got {tuple(x.shape)}"
            )
        return self.push_checked(x)

    def push_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of float ``x (B, C, n)`` checked at its source already (as
        :meth:`AudioStream.push_checked`)."""
        x = x.to(self.inner.device, torch.float32).reshape(self.rows, -1)
        if self._steady(x.shape[-1]):
            return self._push_steady(x)
        self._upsample(x)
        self._pushed += x.shape[-1]
        hop = self.inner.hop_length
        out = self.inner.push_checked(self._take(int(self._queued.min()) // hop * hop))
        self.lengths = list(self.inner.lengths)
        return out

    def flush(self) -> torch.Tensor:
        """End every stream: the filter's tail, then ``inner``'s; returns ``(B, C, m)`` (rows zero-padded,
        see :attr:`lengths`) and resets every row."""
        tail = -(-self.upsampler.delay // self.factor)
        self._upsample(torch.zeros(self.rows, tail, device=self.inner.device))
        self._queued = np.minimum(self._queued, self.factor * self._pushed - self._fed)
        longest = int(self._queued.max())
        padding = longest - self._queued  # only there to step rows together
        valid = torch.arange(longest) < torch.from_numpy(self._queued)[:, None]
        self._queue = self._queue[:, :longest] * valid.to(self._queue.device)
        self._queued[:] = longest
        ready = self.inner.push_checked(self._take(longest))
        out = torch.cat([ready, self.inner.flush()], -1).view(self.rows, -1)
        self.lengths = [
            ready.shape[-1] + n - int(pad) for n, pad in zip(self.inner.lengths, padding, strict=True)
        ]
        out = out * (torch.arange(out.shape[-1]) < torch.tensor(self.lengths)[:, None]).to(out.device)
        self.reset(range(self.rows))
        return out[:, : max(self.lengths, default=0)].reshape(self.batch_size, self.channels, -1)

    def reset(self, rows: Sequence[int] | int) -> None:
        """Restart ``rows`` (indices ``b * C + c``): zero filter and model state, empty buffers."""
        rows = row_indices(rows, self.inner.rows, "row")
        self.inner.reset(rows)
        self._skip[rows] = self.upsampler.delay
        self._pushed[rows] = self._fed[rows] = self._queued[rows] = 0
        with torch.inference_mode():
            zero_rows(self.state, torch.tensor(rows, dtype=torch.long, device=self.inner.device))

    def state_dict(self) -> dict:
        """:meth:`AudioStream.state_dict` of the model's session, with the filter's state and each row's
        queue of upsampled samples and counters."""
        counters = np.stack([self._skip, self._pushed, self._fed, self._queued], 1)
        return {
            "session": self.inner.state_dict(),
            "factor": self.factor,
            "filter": flatten_state(self.state),
            "queue": self._queue.clone(),
            "counters": counters.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the streams saved by :meth:`state_dict` (of a session of the same model, rows,
        options and input rate; :class:`~audiokit.errors.UsageError` otherwise, nothing changed)."""
        if state.get("factor") != self.factor:
            factor = state.get("factor")
            raise UsageError(f"streaming state of upsampling x{factor} does not fit x{self.factor}")
        self.inner.load_state_dict(state["session"])
        with torch.inference_mode():
            load_flat_state(self.state, state["filter"])
        columns = (np.array(column, dtype=np.int64) for column in zip(*state["counters"], strict=True))
        self._skip, self._pushed, self._fed, self._queued = columns
        self._queue = state["queue"].to(self.inner.device)

    def _fused_step(self, compile: bool | str | None) -> Callable | None:
        """The steady state's ``step(x, state, final)``: an :class:`UpsampledStep` with the session's
        step options, compiled ahead of time for any whole number of hops with ``compile="aoti"``
        (eager for other chunks, or where it cannot be built); ``None`` with ``compile="cuda_graph"``
        (the model session's graphed steps serve every push)."""
        if compile == "cuda_graph":
            return None
        fused = UpsampledStep(self.upsampler, self.inner.model)
        eager = functools.partial(fused, **self.inner.step_options)
        if compile != "aoti":
            return eager
        device = self.inner.device
        with torch.inference_mode():
            template = StateList(
                [
                    self.upsampler.init_state(1, device, torch.float32),
                    ConvState(torch.zeros(1, 1, self.waiting, device=device)),
                    self.inner.model.init_state(1, device),
                ]
            )
        hop = torch.zeros(1, 1, self.inner.hop_length // self.factor, device=device)
        compiled = compile_hopwise(self.inner.model, fused, template, hop, self.inner.step_options)
        return compiled if compiled is not None else eager

    def _steady(self, samples: int) -> bool:
        """Whether every row is in the steady state (module docstring) and ``samples`` keep it there."""
        return (
            self._fused is not None
            and not self._skip.any()
            and (self._queued == self.waiting).all()
            and self.inner.in_step(samples * self.factor)
        )

    def _push_steady(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of ``x (rows, n)`` in the steady state: one call of the fused step."""
        self._waiting.history = self._queue[:, None, : self.waiting]
        with self._fused_mode():
            y = self._fused(x[:, None], self._steady_state, final=False)
        self._queue = self._waiting.history[:, 0]
        self._pushed += x.shape[-1]
        self._fed += y.shape[-1]
        out = self.inner.stepped(y)
        self.lengths = list(self.inner.lengths)
        return out

    def _upsample(self, x: torch.Tensor) -> None:
        """Append the aligned upsampled ``x (rows, n)`` to each row's queue (one scatter for all rows)."""
        if not x.shape[-1]:
            return
        with torch.inference_mode():
            y = self.upsampler.step(x[:, None], self.state)[:, 0]
        queued = int(self._queued[0])
        if not self._skip.any() and (self._queued == queued).all():  # rows in step: append
            self._queue = torch.cat([self._queue[:, :queued], y], -1) if queued else y
            self._queued += y.shape[-1]
            return
        drop = np.minimum(self._skip, y.shape[-1])
        self._skip -= drop
        ends = self._queued + y.shape[-1] - drop
        queue = torch.zeros(self.rows, int(ends.max()), device=y.device)
        width = min(queue.shape[-1], self._queue.shape[-1])  # wider after resets: beyond every row's end
        queue[:, :width] = self._queue[:, :width]
        column = torch.arange(y.shape[-1])
        # counters live on the CPU; the audio where the model is
        keep = column >= torch.from_numpy(drop)[:, None]
        where = torch.from_numpy(self._queued - drop)[:, None] + column
        row = torch.arange(self.rows)[:, None].expand_as(where)
        queue[row[keep].to(y.device), where[keep].to(y.device)] = y[keep.to(y.device)]
        self._queue, self._queued = queue, ends

    def _take(self, samples: int) -> torch.Tensor:
        """The first ``samples`` of every row's queue as ``(B, C, samples)``."""
        chunk = self._queue[:, :samples]
        self._queue = self._queue[:, samples:]
        self._queued -= samples
        self._fed += samples
        return chunk.reshape(self.batch_size, self.channels, samples)
