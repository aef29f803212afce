"""Many independent streams advanced together: one batched model step for all of them.

Streams open and close at any time and push chunks of any size. :meth:`MultiStreamBatcher.step`
advances every stream that holds at least one whole frame of input by one frame (``max_hops``: by up
to that many, so a stream with a backlog catches up), in one batched call per number of frames (powers
of two); the streams that hold no whole frame (the padding mask) are left as they were (their state
rows untouched, or saved and put back when a step of nearly every row runs on all of them, which
spares gathering and scattering the stepped rows). Each stream's output equals that of its own
:class:`CodecStream` session (and so the offline result), whatever the frames per step. Memory is
``O(capacity x state)``: one state row per slot, reused after :meth:`close`.
:class:`MultiStreamBatcher` serves codecs, :class:`AudioBatcher` audio-to-audio models (enhancers)
the same way.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.models.base import check_audio
from audiokit.nn.state import assign_rows, select_rows, zero_rows
from audiokit.streaming.audio import audio_step, step_options
from audiokit.streaming.codec import CodecStream


class MultiStreamBatcher:
    """Up to ``capacity`` independent streams of ``codec`` in ``mode`` (see :class:`CodecStream`, also
    for ``compile``).

    A stream pushes audio ``(C, n)`` (codes ``(n_q, n)`` in ``"decode"`` mode) with :meth:`push`; its
    output (audio ``(C, n)`` or codes ``(n_q, frames)``) accumulates until :meth:`pull` or :meth:`close`.
    """

    def __init__(
        self,
        codec,
        capacity: int,
        mode: str = "roundtrip",
        bitrate: float | None = None,
        compile: bool | str | None = False,
    ) -> None:
        if getattr(codec, "family", None) != "codec":
            raise UsageError(
                f"MultiStreamBatcher takes a codec, got {_model_name(codec)}; "
                "enhancers and bandwidth extenders go through AudioBatcher"
            )
        capacity = whole_number(capacity, "capacity")
        self.session = CodecStream(codec, capacity, mode, bitrate, channels=codec.channels, compile=compile)
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
        slot = self._free[0]
        self.session.reset(slot, length=length)  # a refused length leaves the slot free
        self._free.pop(0)
        stream_id = next(self._ids)
        self._slots[stream_id] = slot
        return stream_id

    def _slot(self, stream_id: int) -> int:
        if stream_id not in self._slots:
            raise UsageError(f"no open stream {stream_id}")
        return self._slots[stream_id]

    def push(self, stream_id: int, chunk: torch.Tensor) -> None:
        """Queue ``chunk`` for ``stream_id``: audio ``(channels, samples)``, or codes ``(n_q, frames)`` or
        ``(1, n_q, frames)`` (a :class:`~audiokit.models.Codes` of one item, as ``Codec.encode`` returns,
        also sets the length of a stream opened without one); nothing is computed until :meth:`step`.
        Integer PCM, numpy arrays, NaN or infinite samples and codes outside the codebooks raise
        :class:`~audiokit.errors.UsageError` (as a session's ``push``) before anything is queued."""
        session, slot = self.session, self._slot(stream_id)
        if session.mode == "decode":
            codes = getattr(chunk, "codes", chunk)
            if isinstance(codes, torch.Tensor) and codes.dim() == 3 and codes.shape[0] == 1:
                codes = codes[0]  # one item's codes as Codec.encode returns them
            if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
                shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
                raise UsageError(f"push codes (n_q, frames) for one stream, got {shape}")
            piece = session.session_codes(codes[None], "MultiStreamBatcher.push")[0].to(session.device)
            row = session._rows[slot]
            if hasattr(chunk, "length") and row.limit is None:  # a Codes carries its length, as in a session
                row.limit = int(chunk.length)
        else:
            shape = f"({session.channels}, samples)"
            chunk = check_audio(
                chunk, "MultiStreamBatcher.push", session.codec.sample_rate, shape, (2,), session.dtype, True
            )
            if chunk.shape[0] != session.channels:
                raise UsageError(f"push audio {shape}, got {tuple(chunk.shape)}")
            piece = chunk.to(session.device, session.dtype)
        session._append(slot, piece)

    def ready(self) -> list[int]:
        """Ids of the streams holding at least one whole frame of input."""
        return [i for i in self._slots if self.backlog(i)]

    def backlog(self, stream_id: int) -> int:
        """Whole frames of input ``stream_id`` holds that no step has taken yet."""
        return self.session._rows[self._slot(stream_id)].pending.shape[-1] // self.session._unit()

    def step(self, max_hops: int = 1) -> dict[int, int]:
        """Advance every ready stream by as many whole frames as it holds, at most ``max_hops`` (rounded
        down to a power of two, so streams group into few batched steps); returns ``{id: frames}`` of
        the streams advanced."""
        max_hops = whole_number(max_hops, "max_hops")
        unit, rows = self.session._unit(), self.session._rows
        groups: dict[int, list[int]] = {}
        advanced = {}
        for stream_id, slot in self._slots.items():
            frames = min(rows[slot].pending.shape[-1] // unit, max_hops)
            if frames:
                frames = advanced[stream_id] = 1 << (frames.bit_length() - 1)
                groups.setdefault(frames, []).append(slot)
        with torch.inference_mode():
            for frames, slots in sorted(groups.items(), reverse=True):
                if _pad_to_all(len(slots), self.capacity):
                    self._advance_all(slots, frames * unit)
                else:
                    self.session._advance(slots, max_units=frames)
        return advanced

    def _advance_all(self, slots: list[int], take: int) -> None:
        """Advance ``slots`` by ``take`` input units in a step of every row (no state gather); the
        other open streams' state rows are saved before and put back after, and so are the queues of
        every other row (free slots would otherwise hoard the output of their idle steps)."""
        session, rows = self.session, self.session._rows
        pieces = [rows[r].pending[..., :take] for r in slots]
        x = pieces[0].new_zeros((self.capacity, *pieces[0].shape))
        x[torch.tensor(slots, device=session.device)] = torch.stack(pieces)
        for r in slots:
            rows[r].pending = rows[r].pending[..., take:]
        stepped = set(slots)
        others = [r for r in self._slots.values() if r not in stepped]
        index = torch.tensor(others, dtype=torch.long, device=session.device)
        states = [
            (state, select_rows(state, index)) for state in (session.encoder_state, session.decoder_state)
        ]
        idle = [r for r in range(self.capacity) if r not in stepped]
        queues = {r: dataclasses.replace(rows[r], out=list(rows[r].out)) for r in idle}
        session._run(list(range(self.capacity)), x, final=False)
        for state, saved in states:
            assign_rows(state, index, saved)
        for r, row in queues.items():
            rows[r] = row

    def run(self) -> int:
        """:meth:`step` (one frame each) until no stream is ready; returns the number of steps."""
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
        return self.close_many([stream_id])[0]

    def close_many(self, stream_ids: list[int]) -> list[torch.Tensor]:
        """:meth:`close` of several streams in batched final steps; their outputs, in order. A final
        step that raises (a ``"decode"`` stream whose codes fall short of its length) still closes the
        streams and frees their slots, dropping their output, then re-raises. Unknown or repeated ids
        raise before any stream is touched."""
        slots = _distinct_slots(self, stream_ids)
        try:
            with torch.inference_mode():
                self.session._finish(slots)
            return [_pop(self.session, slot) for slot in slots]
        finally:
            self.session._reset_rows(slots)
            for stream_id, slot in zip(stream_ids, slots, strict=True):
                del self._slots[stream_id]
                self._free.append(slot)


def _pop(session: CodecStream, slot: int) -> torch.Tensor:
    row = session._rows[slot]
    out = torch.cat(row.out, -1) if row.out else session._empty_output_row()
    row.out, row.out_len = [], 0
    return out


class AudioBatcher:
    """Up to ``capacity`` independent mono streams of an audio-to-audio model (an enhancer), advanced
    together in batched steps, each exactly as its own :class:`~audiokit.streaming.audio.AudioStream`.

    ``options`` are the model's streaming knobs (``atten_lim_db``, ``dry``), every stream's unless it
    opens with its own (:meth:`open`): a step of streams with several knobs is still one batched call,
    each row with its own (the model's ``row_step_options``, one value per row), and each stream's output
    is that of a session with its knobs alone. ``compile="aoti"`` runs two-hop steps compiled ahead of
    time, ``"cuda_graph"`` replays steps from a CUDA graph on a GPU (as :class:`AudioStream` does), for
    the streams with the batcher's knobs (the others step eagerly, in a call of their own).
    Streams push mono audio ``(1, n)`` or ``(n,)``; their output (``(1, n)``, aligned with the input,
    the model's ``output_lag`` showing only as lag) accumulates until :meth:`pull` or :meth:`close`.
    Pending input lives in one host ``(capacity, width)`` buffer (a read offset and a fill per slot), so
    a step gathers its rows with one indexing op; a step of nearly every slot runs on all state rows
    (the idle ones saved and put back) rather than on a gathered copy. The buffer is as wide as a step
    reads (``max_hops`` hops, four at least); a stream's input beyond its row waits in that stream's
    own list, so a backlog costs its own size, not ``capacity`` times it.
    """

    def __init__(self, model, capacity: int, compile: bool | str | None = None, **options) -> None:
        if not hasattr(model, "output_lag"):
            raise UsageError(
                f"AudioBatcher takes an audio-to-audio model (an enhancer or a bandwidth extender), got "
                f"{_model_name(model)}; codecs go through MultiStreamBatcher"
            )
        capacity = whole_number(capacity, "capacity")
        self.model = model
        self.capacity = capacity
        self.hop_length = model.hop_length
        self.lag = model.output_lag
        self.options = options
        self.step_options = step_options(model, options, ("compile",))
        self.device = next(model.parameters()).device
        self._step, self.compiled = audio_step(model, self.step_options, compile, self.device, capacity)
        with torch.inference_mode():
            self.state = model.init_state(capacity, self.device)
        # each slot's value of the step options the model takes per row (the batcher's until opened)
        self._row_options = {
            name: np.full(capacity, float(self.step_options[name]))
            for name in getattr(model, "row_step_options", ())
        }
        self._pending = np.zeros((capacity, 4 * self.hop_length), np.float32)  # staged on the host
        self._start = np.zeros(capacity, np.int64)  # read offset of each slot's pending input
        self._fill = np.zeros(capacity, np.int64)  # pending samples of each slot in its row
        self._spill: list[list[np.ndarray]] = [[] for _ in range(capacity)]  # pending past the row
        self._spilled = np.zeros(capacity, np.int64)  # samples in each slot's spill
        self._skip = np.zeros(capacity, np.int64)  # lag samples still to drop
        self._pushed = np.zeros(capacity, np.int64)
        self._emitted = np.zeros(capacity, np.int64)
        self._out: list[list[torch.Tensor]] = [[] for _ in range(capacity)]
        self._slots: dict[int, int] = {}
        self._owner = np.full(capacity, -1, np.int64)  # stream id of each slot (-1: free)
        self._free = list(range(capacity))
        self._ids = itertools.count()

    @property
    def streams(self) -> list[int]:
        """Ids of the open streams."""
        return list(self._slots)

    def open(self, **options) -> int:
        """Start a stream (zero state) and return its id; ``options``: its own knobs (``atten_lim_db``,
        ``dry``), in place of the batcher's of the same names."""
        own = self.step_options
        if options:
            own = step_options(self.model, {**self.options, **options}, ())
            shared = sorted(
                name for name in own if name not in self._row_options and own[name] != self.step_options[name]
            )
            if shared:
                raise UsageError(
                    f"the streams of one {_model_name(self.model)} batcher share {', '.join(shared)}; open "
                    "another batcher for other values"
                )
        if not self._free:
            raise UsageError(f"all {self.capacity} stream slots are in use; close a stream first")
        slot = self._free.pop(0)
        for name, values in self._row_options.items():
            values[slot] = own[name]
        with torch.inference_mode():
            zero_rows(self.state, torch.tensor([slot], device=self.device))
        stream_id = next(self._ids)
        self._slots[stream_id] = slot
        self._owner[slot] = stream_id
        self._start[slot] = self._fill[slot] = self._pushed[slot] = self._emitted[slot] = 0
        self._spill[slot], self._spilled[slot] = [], 0
        self._skip[slot] = self.lag
        self._out[slot] = []
        return stream_id

    def _slot(self, stream_id: int) -> int:
        if stream_id not in self._slots:
            raise UsageError(f"no open stream {stream_id}")
        return self._slots[stream_id]

    def push(self, stream_id: int, chunk: torch.Tensor) -> None:
        """Queue mono ``chunk`` (``(n,)`` or ``(1, n)``) of ``stream_id``; nothing runs until :meth:`step`.
        Integer PCM, numpy arrays and NaN or infinite samples raise :class:`~audiokit.errors.UsageError`
        (:func:`~audiokit.models.base.check_audio`) before anything is queued."""
        shape = "(samples,) or (1, samples)"
        chunk = check_audio(
            chunk, "AudioBatcher.push", self.model.sample_rate, shape, (1, 2), torch.float32, True
        )
        if chunk.dim() == 2 and chunk.shape[0] == 1:
            chunk = chunk[0]
        if chunk.dim() != 1:
            raise UsageError(f"push mono audio (1, samples), got {tuple(chunk.shape)}")
        slot = self._slot(stream_id)
        self._write(slot, chunk.detach().to("cpu", torch.float32).numpy())
        self._pushed[slot] += chunk.shape[0]

    def _write(self, slot: int, chunk: np.ndarray) -> None:
        """Append ``chunk (n,)`` to the pending input of ``slot``: what its row has no room for goes to
        the slot's spill (a copy: the caller's array may change)."""
        if not chunk.shape[0]:
            return
        if self._spilled[slot]:
            self._spill[slot].append(chunk.copy())
            self._spilled[slot] += chunk.shape[0]
            return
        head = self._room(slot, chunk.shape[0])
        end = int(self._start[slot] + self._fill[slot])
        self._pending[slot, end : end + head] = chunk[:head]
        self._fill[slot] += head
        if head < chunk.shape[0]:
            self._spill[slot].append(chunk[head:].copy())
            self._spilled[slot] += chunk.shape[0] - head

    def _room(self, slot: int, n: int) -> int:
        """How many of ``n`` more samples fit in the row of ``slot`` (compacted when that makes room)."""
        start, fill, width = int(self._start[slot]), int(self._fill[slot]), self._pending.shape[1]
        if start and start + fill + n > width:
            self._pending[slot, :fill] = self._pending[slot, start : start + fill].copy()
            start = self._start[slot] = 0
        return min(n, width - start - fill)

    def _refill(self, slot: int) -> None:
        """Move spilled input of ``slot`` into its row, as much as fits."""
        spill = self._spill[slot]
        while spill:
            take = self._room(slot, spill[0].shape[0])
            if not take:
                return
            end = int(self._start[slot] + self._fill[slot])
            self._pending[slot, end : end + take] = spill[0][:take]
            self._fill[slot] += take
            self._spilled[slot] -= take
            if take < spill[0].shape[0]:
                spill[0] = spill[0][take:]
            else:
                spill.pop(0)

    def _widen(self, width: int) -> None:
        """Make every row hold at least ``width`` samples (a step of more hops than the rows hold)."""
        if width > self._pending.shape[1]:
            wider = np.zeros((self.capacity, width), np.float32)
            wider[:, : self._pending.shape[1]] = self._pending
            self._pending = wider

    def ready(self) -> list[int]:
        """Ids of the streams holding at least one whole hop of input."""
        held = self._fill + self._spilled
        return [int(i) for i in self._owner[(held >= self.hop_length) & (self._owner >= 0)]]

    def backlog(self, stream_id: int) -> int:
        """Whole hops of input ``stream_id`` holds that no step has taken yet."""
        slot = self._slot(stream_id)
        return int(self._fill[slot] + self._spilled[slot]) // self.hop_length

    def step(self, max_hops: int = 1) -> dict[int, int]:
        """Advance every ready stream by as many whole hops as it holds, at most ``max_hops`` (rounded
        down to a power of two, so streams group into few batched steps); returns ``{id: hops}`` of
        the streams advanced."""
        held = self._fill + self._spilled
        hops = np.minimum(held // self.hop_length, whole_number(max_hops, "max_hops"))
        hops[self._owner < 0] = 0
        if not hops.any():
            return {}
        hops = np.where(hops > 0, 1 << np.log2(np.maximum(hops, 1)).astype(np.int64), 0)
        self._widen(int(hops.max()) * self.hop_length)
        for slot in np.flatnonzero((hops > 0) & (self._spilled > 0)).tolist():
            self._refill(slot)
        for k in np.unique(hops[hops > 0])[::-1]:
            slots, samples = np.flatnonzero(hops == k), int(k) * self.hop_length
            x = self._pending[slots[:, None], self._start[slots][:, None] + np.arange(samples)]
            self._start[slots] += samples
            self._fill[slots] -= samples
            self._run(slots, x, final=False)
        moved = hops > 0
        return dict(zip(self._owner[moved].tolist(), hops[moved].tolist(), strict=True))

    def pull(self, stream_id: int) -> torch.Tensor:
        """All output ``(1, n)`` of ``stream_id`` produced so far and not yet pulled."""
        slot = self._slot(stream_id)
        out = self._out[slot]
        self._out[slot] = []
        if len(out) == 1:
            return out[0][None]
        return (torch.cat(out) if out else torch.zeros(0, device=self.device))[None]

    def close(self, stream_id: int) -> torch.Tensor:
        """End ``stream_id``: process its rest (as :meth:`AudioStream.flush` does: zeros to whole hops
        past the lag, output cut at the input's length), return all its remaining output, free its slot."""
        return self.close_many([stream_id])[0]

    def close_many(self, stream_ids: list[int]) -> list[torch.Tensor]:
        """:meth:`close` of several streams, in one batched final step per length of rest; their
        outputs, in order. Unknown or repeated ids raise before any stream is touched."""
        groups: dict[int, list[int]] = {}
        for slot in _distinct_slots(self, stream_ids):
            held = int(self._fill[slot] + self._spilled[slot])
            needed = -(-(held + self.lag) // self.hop_length) * self.hop_length
            if self._pushed[slot] and needed:
                groups.setdefault(needed, []).append(slot)
        for needed, slots in groups.items():
            self._run(np.array(slots), np.stack([self._rest(slot, needed) for slot in slots]), final=True)
        outs = [self.pull(stream_id) for stream_id in stream_ids]
        for stream_id in stream_ids:
            slot = self._slots.pop(stream_id)
            self._owner[slot] = -1
            self._fill[slot] = self._spilled[slot] = 0
            self._spill[slot] = []
            self._free.append(slot)
        return outs

    def _rest(self, slot: int, samples: int) -> np.ndarray:
        """All pending input of ``slot`` (its row, then its spill), zero-padded to ``samples``."""
        start, end = int(self._start[slot]), int(self._start[slot] + self._fill[slot])
        held = np.concatenate([self._pending[slot, start:end], *self._spill[slot]])
        return np.pad(held, (0, samples - held.shape[0]))

    def _run(self, slots: np.ndarray, x: np.ndarray, final: bool) -> None:
        """One batched model step of ``slots`` on ``x (len(slots), samples)``, their next input: the
        batcher's step, or where some of them have knobs of their own, the eager step with each row's.
        A compiled step still runs the rows with the batcher's knobs (the others in a call of their own),
        so which path a stream takes never depends on the streams stepped with it."""
        own = np.zeros(len(slots), bool)
        for name, values in self._row_options.items():
            own |= values[slots] != self.step_options[name]
        if own.any() and self.compiled and not own.all():
            self._run_rows(slots[~own], x[~own], final, per_row=False)
            self._run_rows(slots[own], x[own], final, per_row=True)
        else:
            self._run_rows(slots, x, final, per_row=bool(own.any()))

    def _run_rows(self, slots: np.ndarray, x: np.ndarray, final: bool, per_row: bool) -> None:
        """One batched model step of ``slots`` on ``x``: the batcher's step, or (``per_row``) the model's
        eager step with each row's knobs."""
        index = torch.from_numpy(slots).to(self.device)
        samples = x.shape[1]

        def step(x: torch.Tensor, state, rows: np.ndarray) -> torch.Tensor:
            if not per_row:
                return self._step(x, state, final)
            own = {name: torch.from_numpy(values[rows]) for name, values in self._row_options.items()}
            return self.model.step(x, state, final, **{**self.step_options, **own})

        with torch.inference_mode():
            if not final and _pad_to_all(len(slots), self.capacity):  # step every row, restore the rest
                stepped = np.zeros(self.capacity, bool)
                stepped[slots] = True
                others = torch.from_numpy(np.flatnonzero(~stepped & (self._owner >= 0))).to(self.device)
                saved = select_rows(self.state, others)
                padded = np.zeros((self.capacity, samples), np.float32)
                padded[slots] = x
                everyone = np.arange(self.capacity)
                y = step(torch.from_numpy(padded).to(self.device)[:, None], self.state, everyone)[index, 0]
                if others.numel():
                    assign_rows(self.state, others, saved)
            else:
                x = torch.from_numpy(x).to(self.device)[:, None]
                part = select_rows(self.state, index)
                y = step(x, part, slots)[:, 0]
                assign_rows(self.state, index, part)
        drop = np.minimum(self._skip[slots], samples)
        self._skip[slots] -= drop
        keep = samples - drop
        if final:
            keep = np.minimum(keep, np.maximum(self._pushed[slots] - self._emitted[slots], 0))
        self._emitted[slots] += keep
        for slot, row, first, count in zip(slots.tolist(), y, drop.tolist(), keep.tolist(), strict=True):
            self._out[slot].append(row[first : first + count])


def _model_name(model: object) -> str:
    """How a batcher's messages name ``model``: its family and name, or its type."""
    if hasattr(model, "family") and hasattr(model, "name"):
        return f"the {model.family} {model.name}"
    return type(model).__qualname__


def _distinct_slots(batcher: MultiStreamBatcher | AudioBatcher, stream_ids: list[int]) -> list[int]:
    """The slots of open ``stream_ids`` for ``close_many``; UsageError for an unknown or repeated id."""
    slots = [batcher._slot(stream_id) for stream_id in stream_ids]
    if len(set(slots)) != len(slots):
        raise UsageError(f"close_many: stream ids repeat in {list(stream_ids)}")
    return slots


def _pad_to_all(rows: int, capacity: int) -> bool:
    """Whether a step of ``rows`` of ``capacity`` state rows runs on all of them (the idle rows' state
    saved and put back) rather than on a gathered copy of those rows: when they are nearly all."""
    return 5 * rows >= 4 * capacity
