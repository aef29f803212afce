"""Streaming session of input below a model's rate: an integer-factor FIR upsampler in front of an
:class:`~audiokit.streaming.audio.AudioStream` (a bandwidth extender's 8 kHz input, for one).

Each row's upsampled signal is aligned (the filter's first ``delay`` output samples dropped) and, on
:meth:`UpsampledStream.flush`, completed with the filter's tail (zeros pushed through it) and cut to
exactly ``factor`` times the row's input length: the offline ``upsampler(pad(x))[delay : delay +
factor * T]`` block by block. So the output equals the model's offline output on the upsampled signal
for any chunking, ``factor * T`` samples per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from audiokit.errors import UsageError
from audiokit.nn.resample import Upsampler
from audiokit.nn.state import zero_rows
from audiokit.streaming.audio import AudioStream


class UpsampledStream:
    """``inner``'s rows fed through ``upsampler`` (mono, one row per ``inner`` row); chunks are pushed at
    ``1 / upsampler.factor`` of the model's rate. Same ``push``/``flush``/``reset``/``lengths`` contract
    as :class:`AudioStream`; lengths count output (model-rate) samples."""

    def __init__(self, upsampler: Upsampler, inner: AudioStream) -> None:
        self.upsampler = upsampler
        self.inner = inner
        self.factor = upsampler.factor
        self.batch_size, self.channels, self.rows = inner.batch_size, inner.channels, inner.rows
        with torch.inference_mode():
            self.state = upsampler.init_state(self.rows, inner.device, torch.float32)
        # per row: filter output still to drop, input pushed, upsampled samples given to ``inner`` and
        # queued for it (``_queue``: left-aligned rows, each valid up to its ``_queued``)
        self._skip = torch.full((self.rows,), upsampler.delay, dtype=torch.long)
        self._pushed, self._fed, self._queued = (torch.zeros(self.rows, dtype=torch.long) for _ in range(3))
        self._queue = torch.zeros(self.rows, 0, device=inner.device)
        self.lengths: list[int] = [0] * self.rows

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Feed ``x (B, C, n)`` at the input rate; returns ``(B, C, m)`` at the model's rate."""
        if x.dim() != 3 or x.shape[0] != self.batch_size or x.shape[1] != self.channels:
            raise UsageError(
                f"expected a chunk of shape ({self.batch_size}, {self.channels}, n), got {tuple(x.shape)}"
            )
        self._upsample(x.to(self.inner.device, torch.float32).reshape(self.rows, -1))
        self._pushed += x.shape[-1]
        return self.inner.push(self._take(int(self._queued.min())))

    def flush(self) -> torch.Tensor:
        """End every stream: the filter's tail, then ``inner``'s; returns ``(B, C, m)`` (rows zero-padded,
        see :attr:`lengths`) and resets every row."""
        tail = -(-self.upsampler.delay // self.factor)
        self._upsample(torch.zeros(self.rows, tail, device=self.inner.device))
        self._queued = torch.minimum(self._queued, self.factor * self._pushed - self._fed)
        longest = int(self._queued.max())
        padding = longest - self._queued  # only there to step rows together
        valid = torch.arange(longest) < self._queued[:, None]
        self._queue = self._queue[:, :longest] * valid.to(self._queue.device)
        self._queued[:] = longest
        ready = self.inner.push(self._take(longest))
        out = torch.cat([ready, self.inner.flush()], -1).view(self.rows, -1)
        self.lengths = [
            ready.shape[-1] + n - int(pad) for n, pad in zip(self.inner.lengths, padding, strict=True)
        ]
        out = out * (torch.arange(out.shape[-1]) < torch.tensor(self.lengths)[:, None]).to(out.device)
        self.reset(range(self.rows))
        return out[:, : max(self.lengths, default=0)].reshape(self.batch_size, self.channels, -1)

    def reset(self, rows: Sequence[int] | int) -> None:
        """Restart ``rows`` (indices ``b * C + c``): zero filter and model state, empty buffers."""
        rows = [rows] if isinstance(rows, int) else list(rows)
        self.inner.reset(rows)  # checks the indices
        index = torch.tensor(rows, dtype=torch.long)
        self._skip[index] = self.upsampler.delay
        self._pushed[index] = self._fed[index] = self._queued[index] = 0
        with torch.inference_mode():
            zero_rows(self.state, index.to(self.inner.device))

    def _upsample(self, x: torch.Tensor) -> None:
        """Append the aligned upsampled ``x (rows, n)`` to each row's queue (one scatter for all rows)."""
        if not x.shape[-1]:
            return
        with torch.inference_mode():
            y = self.upsampler.step(x[:, None], self.state)[:, 0]
        queued = self._queued.tolist()
        if not any(self._skip.tolist()) and min(queued) == max(queued):  # rows in step: append
            self._queue = torch.cat([self._queue[:, : queued[0]], y], -1)
            self._queued += y.shape[-1]
            return
        drop = self._skip.clamp(max=y.shape[-1])
        self._skip -= drop
        ends = self._queued + y.shape[-1] - drop
        queue = torch.zeros(self.rows, int(ends.max()), device=y.device)
        width = min(queue.shape[-1], self._queue.shape[-1])  # wider after resets: beyond every row's end
        queue[:, :width] = self._queue[:, :width]
        column = torch.arange(y.shape[-1])
        keep = column >= drop[:, None]  # counters live on the CPU; the audio where the model is
        where = (self._queued - drop)[:, None] + column
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
