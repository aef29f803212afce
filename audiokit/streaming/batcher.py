"""Many independent streams advanced together: one batched model step per frame for all of them.

Streams open and close at any time and push chunks of any size. :meth:`MultiStreamBatcher.step`
advances every stream that holds at least one whole frame of input by exactly one frame, in one
batched call; the streams that do not (the padding mask) are left untouched, their state rows neither
read nor written. Each stream's output equals that of its own :class:`CodecStream` session (and so
the offline result). Memory is ``O(capacity x state)``: one state row per slot, reused after
:meth:`close`. :class:`MultiStreamBatcher` serves codecs, :class:`AudioBatcher` audio-to-audio models
(enhancers) the same way.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from audiokit.errors import UsageError
from audiokit.nn.state import assign_rows, select_rows, zero_rows
from audiokit.streaming.audio import AudioRow
from audiokit.streaming.codec import CodecStream


class MultiStreamBatcher:
    """Up to ``capacity`` independent streams of ``codec`` in ``mode`` (see :class:`CodecStream`).

    A stream pushes audio ``(C, n)`` (codes ``(n_q, n)`` in ``"decode"`` mode) with :meth:`push`; its
    output (audio ``(C, n)`` or codes ``(n_q, frames)``) accumulates until :meth:`pull` or :meth:`close`.
    """

    def __init__(self, codec, capacity: int, mode: str = "roundtrip", bitrate: float | None = None) -> None:
        self.session = CodecStream(codec, capacity, mode, bitrate, channels=codec.channels)
        self.capacity = capacity
        self._slots: dict[int, int] = {}
        self._free = list(range(capacity))
        self._ids = itertools.count()

    @property
    def timer(self):
        """The :class:`StepTimer` of the batched steps."""
        return self.session.timer

    @property
    def streams(self) -> list[int]:
        """Ids of the open streams."""
        return list(self._slots)

    def open(self, length: int | None = None) -> int:
        """Start a stream and return its id (``length``: ``"decode"`` mode's output length, optional)."""
        if not self._free:
            raise UsageError(f"all {self.capacity} stream slots are in use; close a stream first")
        slot = self._free.pop(0)
        self.session.reset(slot, length=length)
        stream_id = next(self._ids)
        self._slots[stream_id] = slot
        return stream_id

    def _slot(self, stream_id: int) -> int:
        if stream_id not in self._slots:
            raise UsageError(f"no open stream {stream_id}")
        return self._slots[stream_id]

    def push(self, stream_id: int, chunk: torch.Tensor) -> None:
        """Queue ``chunk`` for ``stream_id``; nothing is computed until :meth:`step`."""
        session, slot = self.session, self._slot(stream_id)
        if session.mode == "decode":
            codes = getattr(chunk, "codes", chunk)
            if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
                shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
                raise UsageError(f"push codes (n_q, frames) for one stream, got {shape}")
            session._check_codes(codes)
            piece = codes.to(session.device)
        else:
            if not isinstance(chunk, torch.Tensor) or chunk.dim() != 2 or chunk.shape[0] != session.channels:
                shape = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
                raise UsageError(f"push audio ({session.channels}, samples), got {shape}")
            piece = chunk.to(session.device, session.dtype)
        session._append(slot, piece)

    def ready(self) -> list[int]:
        """Ids of the streams holding at least one whole frame of input."""
        unit = self.session._unit()
        return [i for i, slot in self._slots.items() if self.session._rows[slot].pending.shape[-1] >= unit]

    def step(self) -> int:
        """Advance every ready stream by one frame in one batched step; returns how many advanced."""
        rows = [self._slots[i] for i in self.ready()]
        if rows:
            with torch.inference_mode():
                self.session._advance(rows, max_units=1)
        return len(rows)

    def run(self) -> int:
        """:meth:`step` until no stream is ready; returns the number of steps."""
        steps = 0
        while self.step():
            steps += 1
        return steps

    def pull(self, stream_id: int) -> torch.Tensor:
        """All output of ``stream_id`` produced so far and not yet pulled."""
        return _pop(self.session, self._slot(stream_id))

    def close(self, stream_id: int) -> torch.Tensor:
        """End ``stream_id``: process its rest (as :meth:`CodecStream.flush` does), return all its
        remaining output and free its slot."""
        slot = self._slot(stream_id)
        with torch.inference_mode():
            self.session._finish([slot])
        out = _pop(self.session, slot)
        self.session._reset_rows([slot])
        del self._slots[stream_id]
        self._free.append(slot)
        return out


def _pop(session: CodecStream, slot: int) -> torch.Tensor:
    row = session._rows[slot]
    out = torch.cat(row.out, -1) if row.out else session._empty_output_row()
    row.out, row.out_len = [], 0
    return out


class AudioBatcher:
    """Up to ``capacity`` independent mono streams of an audio-to-audio model (an enhancer), advanced
    together one hop per :meth:`step`, each exactly as its own :class:`~audiokit.streaming.audio.AudioStream`.

    ``options`` are the model's streaming knobs (``atten_lim_db``, ``dry``), shared by every stream.
    Streams push mono audio ``(1, n)`` or ``(n,)``; their output (``(1, n)``, aligned with the input,
    the model's ``output_lag`` showing only as lag) accumulates until :meth:`pull` or :meth:`close`.
    """

    def __init__(self, model, capacity: int, **options) -> None:
        self.model = model
        self.capacity = capacity
        self.hop_length = model.hop_length
        self.lag = model.output_lag
        self.step_options = model.step_options(**options)
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            self.state = model.init_state(capacity, self.device)
        self._rows: dict[int, AudioRow] = {}
        self._slots: dict[int, int] = {}
        self._free = list(range(capacity))
        self._ids = itertools.count()

    @property
    def streams(self) -> list[int]:
        """Ids of the open streams."""
        return list(self._slots)

    def open(self) -> int:
        """Start a stream (zero state) and return its id."""
        if not self._free:
            raise UsageError(f"all {self.capacity} stream slots are in use; close a stream first")
        slot = self._free.pop(0)
        with torch.inference_mode():
            zero_rows(self.state, torch.tensor([slot], device=self.device))
        stream_id = next(self._ids)
        self._slots[stream_id] = slot
        self._rows[slot] = AudioRow(torch.zeros(0, device=self.device), skip=self.lag)
        return stream_id

    def _row(self, stream_id: int) -> AudioRow:
        if stream_id not in self._slots:
            raise UsageError(f"no open stream {stream_id}")
        return self._rows[self._slots[stream_id]]

    def push(self, stream_id: int, chunk: torch.Tensor) -> None:
        """Queue mono ``chunk`` (``(n,)`` or ``(1, n)``) of ``stream_id``; nothing runs until :meth:`step`."""
        if chunk.dim() == 2 and chunk.shape[0] == 1:
            chunk = chunk[0]
        if chunk.dim() != 1:
            raise UsageError(f"push mono audio (1, samples), got {tuple(chunk.shape)}")
        row = self._row(stream_id)
        row.pending = torch.cat([row.pending, chunk.to(self.device, torch.float32)])
        row.pushed += chunk.shape[0]

    def ready(self) -> list[int]:
        """Ids of the streams holding at least one whole hop of input."""
        return [i for i, slot in self._slots.items() if self._rows[slot].pending.shape[0] >= self.hop_length]

    def step(self) -> int:
        """Advance every ready stream by one hop in one batched step; returns how many advanced."""
        slots = [self._slots[i] for i in self.ready()]
        if slots:
            self._run(slots, self.hop_length, final=False)
        return len(slots)

    def pull(self, stream_id: int) -> torch.Tensor:
        """All output ``(1, n)`` of ``stream_id`` produced so far and not yet pulled."""
        row = self._row(stream_id)
        out = torch.cat(row.out) if row.out else torch.zeros(0, device=self.device)
        row.out, row.out_len = [], 0
        return out[None]

    def close(self, stream_id: int) -> torch.Tensor:
        """End ``stream_id``: process its rest (as :meth:`AudioStream.flush` does: zeros to whole hops
        past the lag, output cut at the input's length), return all its remaining output, free its slot."""
        row, slot = self._row(stream_id), self._slots[stream_id]
        needed = -(-(row.pending.shape[0] + self.lag) // self.hop_length) * self.hop_length
        if row.pushed and needed:
            row.pending = F.pad(row.pending, (0, needed - row.pending.shape[0]))
            self._run([slot], needed, final=True)
        out = self.pull(stream_id)
        del self._slots[stream_id], self._rows[slot]
        self._free.append(slot)
        return out

    def _run(self, slots: list[int], samples: int, final: bool) -> None:
        """One batched model step of ``slots`` on their next ``samples`` pending samples."""
        rows = [self._rows[s] for s in slots]
        x = torch.stack([row.pending[:samples] for row in rows])[:, None]
        with torch.inference_mode():
            if len(slots) == self.capacity:
                y = self.model.step(x, self.state, **self.step_options)
            else:
                index = torch.tensor(slots, device=self.device)
                part = select_rows(self.state, index)
                y = self.model.step(x, part, **self.step_options)
                assign_rows(self.state, index, part)
        for row, out in zip(rows, y[:, 0], strict=True):
            row.advance(samples, out, final)
