"""Streaming sessions of a codec: audio -> codes, codes -> audio, and audio -> audio, chunk by chunk.

A :class:`CodecStream` (made by ``codec.stream(batch_size, mode, bitrate=None)``) gives exactly what
the offline calls give, whatever the chunking: ``"encode"`` yields ``codec.encode(x, bitrate).codes``,
``"decode"`` yields ``codec.decode(codes)`` and ``"roundtrip"`` yields
``codec.decode(codec.encode(x, bitrate))`` once :meth:`CodecStream.flush` has returned the tail.

How it stays exact. Each stream (row) buffers its input until it holds whole frames of
``hop_length`` samples, so every inner conv receives a multiple of its stride. ``flush`` appends the
codec's ``target_delay`` zeros to what is left (as ``encode`` does) and runs one final step in which
each conv pads the end like the offline forward. The decoder turns ``n`` frames into ``n * hop_length``
final samples. Audio outputs drop the first ``target_delay`` decoder samples and stop at the signal
length: the input length for ``"roundtrip"``, the ``length`` given to a ``"decode"`` session (or
carried by a pushed :class:`~audiokit.models.Codes`); a ``"decode"`` session without a length outputs
every frame's samples (up to ``hop_length - 1`` more than the original signal had).

Rows. Pushing ``(B, C, n)`` feeds row ``b`` (mono models code each channel as its own row, so there
are ``B * C`` rows, row ``b * C + c``). Rows normally advance in lockstep; after :meth:`reset` of some
rows they may hold different amounts of output. :meth:`push` returns what every row has ready (the
rest waits in the row's queue); :meth:`flush` returns everything, zero-padded (codes: ``-1``) to the
longest row, and :attr:`CodecStream.lengths` gives each row's valid length of the last result.

Memory is ``O(rows x state)``. All computation runs under ``torch.inference_mode``; outputs are
inference tensors. Weights are read when the session is created (the blocks' ``init_state`` prepares
their matrices, the session its codeword tables): make a new session after changing them.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from audiokit import ops
from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.nn.state import (
    StreamState,
    assign_rows,
    flatten_state,
    load_flat_state,
    row_indices,
    select_rows,
    zero_rows,
)
from audiokit.streaming.compiled import compile_step
from audiokit.streaming.graphs import GraphedStep
from audiokit.streaming.latency import StepTimer, timed

MODES = ("encode", "decode", "roundtrip")


@dataclass
class _Row:
    """Bookkeeping of one stream: unprocessed input, queued output and counters since its reset."""

    pending: torch.Tensor
    out: list[torch.Tensor] = field(default_factory=list)
    out_len: int = 0
    pushed: int = 0  # input samples (frames in decode mode) pushed since the reset
    skip: int = 0  # decoder samples still to drop at the start
    emitted: int = 0  # output samples (frames in encode mode) queued since the reset
    limit: int | None = None  # total output samples, when known


class CodecStream:
    """A streaming session of ``codec`` for ``batch_size`` streams (see the module docstring).

    Args:
        codec: a :class:`~audiokit.models.Codec` (causal).
        batch_size: number of items ``B``.
        mode: ``"encode"`` (push float32 audio ``(B, C, n)``, get int64 codes ``(B * C, n_q, frames)``
            for mono models, ``(B, n_q, frames)`` otherwise), ``"decode"`` (push codes, get audio
            ``(B, C, n)``) or ``"roundtrip"`` (audio to audio).
        bitrate: bits/s for encoding (all codebooks when ``None``).
        length: ``"decode"`` only: samples per channel to output per item (an int for all or one per
            item); see the module docstring.
        channels: channels ``C`` per item (default: the codec's).
        compile: ``True`` or ``"inductor"``: run the encoder and decoder steps through ``torch.compile``
            (static shapes: each new chunk size compiles once; needs a working Inductor backend, e.g. a
            C++ compiler on CPU); ``"aoti"``: steps of one frame run as libraries compiled ahead of time
            (:mod:`audiokit.streaming.compiled`, cached on disk; eager where they cannot be built,
            :attr:`compiled` says which); ``"cuda_graph"`` (on a GPU): steps of every row replayed from
            CUDA graphs (:mod:`audiokit.streaming.graphs`, recorded at the first step of each chunk
            shape; eager where recording fails, :func:`~audiokit.streaming.graphs.graph_report` says
            whether they ran), eager on other devices.
    """

    def __init__(
        self,
        codec,
        batch_size: int,
        mode: str,
        bitrate: float | None = None,
        length: int | Sequence[int] | None = None,
        channels: int | None = None,
        compile: bool | str | None = False,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"streaming mode must be one of {', '.join(MODES)}, got {mode!r}")
        compile = False if compile is None else compile  # an audio session's "not compiled" (its default)
        if compile not in (False, True, "inductor", "aoti", "cuda_graph"):
            raise UsageError(
                f"compile must be False (or None), True, 'inductor', 'aoti' or 'cuda_graph', got {compile!r}"
            )
        batch_size = whole_number(batch_size, "batch_size")
        if length is not None and mode != "decode":
            raise UsageError("length is only for 'decode' sessions (audio inputs carry their own length)")
        self.codec = codec
        self.mode = mode
        self.batch_size = batch_size
        self.channels = codec.channels if channels is None else whole_number(channels, "channels")
        if codec.channels != 1 and self.channels != codec.channels:
            raise UsageError(f"{codec.name} codes {codec.channels} channels, got channels={self.channels}")
        self.fold = self.channels if codec.channels == 1 else 1
        self.rows = batch_size * self.fold
        self.hop_length = codec.hop_length
        self.target_delay = codec.target_delay
        self.n_q = codec.n_q_for_bitrate(bitrate) if mode != "decode" else None
        self.quantizer = codec.quantizer
        param = next(codec.parameters())
        self.device, self.dtype = param.device, torch.float32
        self.compile = compile
        self.encoder = codec.encoder if mode != "decode" else None
        self._encoder_step = self._prepared_step(self.encoder)
        self._coding = {"n_q": self.n_q, "quantize": mode == "roundtrip"}
        self._encode = functools.partial(self._encode_rows_step, **self._coding)
        self.compiled = {"encoder": False, "decoder": False}
        with self._step_backend():
            self.lookups = codec.quantizer.prepare_lookup()  # the codeword tables of this session
            with torch.inference_mode():  # init_state also prepares the blocks' weights for their steps
                self.encoder_state = self._init(self.encoder)
            if compile == "aoti" and self.encoder is not None:
                self._compile_encoder_ahead_of_time()
        if compile == "cuda_graph" and self.device.type == "cuda" and self.encoder is not None:
            outputs = 2 if self._coding["quantize"] else 1
            self._encode = GraphedStep(self._encode, outputs, batch=self.rows, model=codec)
            self.compiled["encoder"] = True
        # a "decode" session learns its number of codebooks from the first codes: the shared decoder
        # until then (the same whenever the codec has no decoder of that number's own)
        self.decoder = self.decoder_state = None
        if mode != "encode":
            self._set_decoder(codec.decoder_for(self.n_q or 0))
        self._rows = [self._new_row() for _ in range(self.rows)]
        self.lengths: list[int] = [0] * self.rows
        self.timer = StepTimer()
        if length is not None:
            self._set_limits(range(batch_size), self._lengths(range(batch_size), length))

    # -- public API -------------------------------------------------------------------------------
    def push(self, x) -> torch.Tensor:
        """Feed the next chunk (audio ``(B, C, n)``, or codes / :class:`Codes` in ``"decode"`` mode, any
        ``n >= 0``) and return what every row has ready (possibly nothing: a length-0 last axis)."""
        return self._push_rows(self._split_input(x))

    def push_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of float audio ``x (B, C, n)`` checked at its source already (as
        :meth:`~audiokit.streaming.audio.AudioStream.push_checked`; audio modes)."""
        if self.mode == "decode":
            raise UsageError("push_checked takes audio; a 'decode' session takes codes through push")
        return self._push_rows(x.to(self.device, self.dtype).reshape(self.rows, self.codec.channels, -1))

    def _push_rows(self, pieces: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of the rows of a chunk (:meth:`_split_input`)."""
        if pieces.shape[-1]:
            for r in range(self.rows):
                self._append(r, pieces[r])
            with torch.inference_mode():
                self._advance(range(self.rows))
        return self._collect(flush=False)

    def flush(self) -> torch.Tensor:
        """End every stream: process the rest, return all remaining output, and reset every row.

        Rows may end with different lengths (after :meth:`reset`); the result is padded to the longest
        and :attr:`lengths` gives each row's valid length. A flush that raises (a ``"decode"`` row whose
        codes fall short of its length) resets every row too, dropping their output. A ``"decode"``
        session then takes its number of codebooks from the next codes pushed.
        """
        rows = list(range(self.rows))
        try:
            with torch.inference_mode():
                self._finish(rows)
            return self._collect(flush=True)
        finally:
            self._reset_rows(rows)
            if self.mode == "decode":  # the next streams may come at another bitrate
                self.n_q = None

    def reset(self, items: Sequence[int] | int, length: int | Sequence[int] | None = None) -> None:
        """Restart streams ``items`` (item indices ``0 .. B-1``) from scratch, leaving the others as they
        are; their queued output is dropped. ``length`` as in the constructor (``"decode"`` only)."""
        items = row_indices(items, self.batch_size, "reset: item")
        if length is not None and self.mode != "decode":
            raise UsageError("length is only for 'decode' sessions")
        lengths = None if length is None else self._lengths(items, length)  # refused: nothing reset
        self._reset_rows([item * self.fold + c for item in items for c in range(self.fold)])
        if lengths is not None:
            self._set_limits(items, lengths)

    def state_dict(self) -> dict:
        """Everything needed to continue these streams elsewhere: model states, buffers, counters.

        Holds only tensors, ints, strings and lists (``torch.load(..., weights_only=True)`` reads it).
        """
        rows = []
        for row in self._rows:
            out = torch.cat(row.out, -1) if row.out else self._empty_output_row()
            rows.append(
                {
                    "pending": row.pending.clone(),
                    "out": out.clone(),
                    "counters": [row.pushed, row.skip, row.emitted, -1 if row.limit is None else row.limit],
                }
            )
        return {
            "model": self.codec.name,
            "mode": self.mode,
            "rows": self.rows,
            "n_q": -1 if self.n_q is None else self.n_q,
            "encoder": flatten_state(self.encoder_state),
            "decoder": flatten_state(self.decoder_state),
            "streams": rows,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the streams saved by :meth:`state_dict` (of a session of the same model, mode,
        rows and bitrate; a ``"decode"`` session that has not seen codes yet takes the saved codebook
        count)."""
        n_q = -1 if self.n_q is None else self.n_q
        if self.mode == "decode" and self.n_q is None:  # learnt from the first codes pushed
            n_q = state.get("n_q")
        expected = (self.codec.name, self.mode, self.rows, n_q)
        got = (state.get("model"), state.get("mode"), state.get("rows"), state.get("n_q"))
        if got != expected:
            raise UsageError(f"streaming state of (model, mode, rows, n_q) = {got} does not fit {expected}")
        if self.mode == "decode" and n_q >= 0:
            self._learn_n_q(n_q)
        with torch.inference_mode():
            load_flat_state(self.encoder_state, state["encoder"])
            load_flat_state(self.decoder_state, state["decoder"])
        for row, saved in zip(self._rows, state["streams"], strict=True):
            pushed, skip, emitted, limit = (int(v) for v in saved["counters"])
            out = saved["out"].to(self.device)
            row.pending = saved["pending"].to(self.device)
            row.out, row.out_len = ([out] if out.shape[-1] else []), out.shape[-1]
            row.pushed, row.skip, row.emitted = pushed, skip, emitted
            row.limit = None if limit < 0 else limit

    # -- rows -------------------------------------------------------------------------------------
    def _step_backend(self) -> contextlib.AbstractContextManager:
        """Where the steps are prepared: AOTInductor traces the torch ops (a fused kernel is opaque to
        ``torch.export``), so an ``"aoti"`` session prepares them for torch whatever ``AUDIOKIT_OPS`` or
        ``ops.use_backend`` force."""
        return ops.use_backend("torch") if self.compile == "aoti" else contextlib.nullcontext()

    def _prepared_step(self, module):
        """``module.step_t`` (``None`` without a module), through ``torch.compile`` for an inductor
        session."""
        if module is None:
            return None
        if self.compile in (True, "inductor"):
            return torch.compile(module.step_t, dynamic=False)
        return module.step_t

    def _set_decoder(self, decoder) -> None:
        """Decode with ``decoder`` (one of the codec's, :meth:`~audiokit.models.Codec.decoder_for`): its
        step, compiled as the session asks, and zero states for every row."""
        self.decoder, self._decoder_step = decoder, self._prepared_step(decoder)
        self.compiled["decoder"] = False
        with self._step_backend():
            with torch.inference_mode():
                self.decoder_state = self._init(decoder)
            if self.compile == "aoti":
                with torch.inference_mode():
                    template = decoder.init_state(1, self.device, self.dtype)
                frame = torch.zeros(1, 1, self.quantizer.dim, device=self.device)
                compiled = compile_step(self.codec, decoder.step_t, template, frame)
                if compiled is not None:
                    self._decoder_step, self.compiled["decoder"] = compiled, True
        if self.compile == "cuda_graph" and self.device.type == "cuda":
            self._decoder_step = GraphedStep(self._decoder_step, batch=self.rows, model=self.codec)
            self.compiled["decoder"] = True

    def _compile_encoder_ahead_of_time(self) -> None:
        """Swap the encoder's step of one frame (with the RVQ search) for an AOTInductor library, where
        it builds."""
        with torch.inference_mode():
            template = self.encoder.init_state(1, self.device, self.dtype)  # one stream's
        frame = torch.zeros(1, self.hop_length, self.codec.channels, device=self.device)
        outputs = 2 if self._coding["quantize"] else 1
        step = self._encode_rows_step
        compiled = compile_step(self.codec, step, template, frame, self._coding, outputs)
        if compiled is not None:
            self._encode, self.compiled["encoder"] = compiled, True

    def _encode_rows_step(
        self, x: torch.Tensor, state: StreamState | None, final: bool = False, *, n_q: int, quantize: bool
    ) -> tuple[torch.Tensor, ...]:
        """The encoder's step on time-major ``x`` and the RVQ of its latent rows: codes ``(n_q, rows)``
        and, with ``quantize``, the quantized rows ``(rows, dim)``."""
        latent = self._encoder_step(x, state, final)
        flat = latent.reshape(-1, latent.shape[-1])
        codes, quantized = self.quantizer.encode_rows(flat, n_q, self.lookups, quantize=quantize)
        return (codes, quantized) if quantize else (codes,)

    def _init(self, module) -> StreamState | None:
        return None if module is None else module.init_state(self.rows, self.device, self.dtype)

    def _new_row(self) -> _Row:
        width = self.codec.channels if self.mode != "decode" else 0
        pending = torch.zeros(width, 0, device=self.device, dtype=self.dtype)
        if self.mode == "decode":
            pending = torch.zeros(0, 0, device=self.device, dtype=torch.int64)
        return _Row(pending, skip=self.target_delay if self.mode != "encode" else 0)

    def _reset_rows(self, rows: list[int]) -> None:
        if not rows:
            return
        index = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            zero_rows(self.encoder_state, index)
            zero_rows(self.decoder_state, index)
        for r in rows:
            self._rows[r] = self._new_row()

    def _set_limits(self, items: Sequence[int], lengths: list[int]) -> None:
        """``lengths`` (one per item, from :meth:`_lengths`): the output samples of the rows of ``items``."""
        for item, value in zip(items, lengths, strict=True):
            for c in range(self.fold):
                self._rows[item * self.fold + c].limit = value

    @staticmethod
    def _lengths(items: Sequence[int], length: int | Sequence[int]) -> list[int]:
        """``length`` (one whole number for all ``items``, or one each: Python, numpy or torch integers)
        as one output length per item; UsageError for anything else."""
        expected = f"length must be one positive int or one per item ({len(items)}), got {length!r}"
        try:
            lengths = [operator.index(length)] * len(items)
        except TypeError:
            try:
                lengths = [operator.index(v) for v in length]
            except TypeError:
                raise UsageError(expected) from None
        if len(lengths) != len(items) or any(value < 1 for value in lengths):
            raise UsageError(expected)
        return lengths

    # -- input and output -----------------------------------------------------------------------
    def _split_input(self, x) -> torch.Tensor:
        """Rows of the pushed chunk: audio ``(rows, C_model, n)`` or codes ``(rows, n_q, n)``."""
        if self.mode == "decode":
            codes = getattr(x, "codes", x)
            if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.shape[0] != self.rows:
                shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
                raise UsageError(f"decode sessions take codes ({self.rows}, n_q, frames), got {shape}")
            codes = self.session_codes(codes, "push")
            if hasattr(x, "length"):
                for row in self._rows:
                    row.limit = int(x.length) if row.limit is None else row.limit
            return codes.to(self.device)
        shape = f"({self.batch_size}, {self.channels}, samples)"
        x = self.codec.audio_input(x, "push", shape, allow_empty=True)  # a float tensor, 3-D, finite
        if tuple(x.shape[:2]) != (self.batch_size, self.channels):
            raise UsageError(f"push audio {shape}, got {tuple(x.shape)}")
        return x.to(self.device, self.dtype).reshape(self.rows, self.codec.channels, x.shape[-1])

    def session_codes(self, codes: torch.Tensor, where: str) -> torch.Tensor:
        """``codes (rows, n_q, frames)`` as int64 (:meth:`Codec.check_codes`: integers within the codebooks),
        with the session's number of codebooks: a ``"decode"`` session takes it from the first codes that
        pass, and until a flush; UsageError otherwise, before anything changes."""
        checked = self.codec.check_codes(codes, where)
        n_q = checked.shape[1]
        if self.n_q is None:
            self._learn_n_q(n_q)
        elif n_q != self.n_q:
            raise UsageError(f"{where}: codes have {n_q} codebooks but this stream started with {self.n_q}")
        return checked

    def _learn_n_q(self, n_q: int) -> None:
        """A ``"decode"`` session's number of codebooks, from its first codes (or a saved state); its
        decoder becomes the one of that number when the codec has one."""
        self.n_q = n_q
        decoder = self.codec.decoder_for(n_q)
        if decoder is not self.decoder:
            self._set_decoder(decoder)

    def _append(self, r: int, piece: torch.Tensor) -> None:
        """Queue input ``piece`` (``(C_model, n)`` audio or ``(n_q, n)`` codes) for row ``r``."""
        row = self._rows[r]
        row.pending = torch.cat([row.pending, piece], -1) if row.pending.shape[-1] else piece
        row.pushed += piece.shape[-1]

    def _empty_output_row(self) -> torch.Tensor:
        if self.mode == "encode":
            return torch.zeros(self.n_q or 0, 0, dtype=torch.int64, device=self.device)
        return torch.zeros(self.codec.channels, 0, device=self.device, dtype=self.dtype)

    def _collect(self, flush: bool) -> torch.Tensor:
        """Pop output from every row: the common ready length, or (``flush``) everything, padded."""
        lengths = [row.out_len for row in self._rows]
        take = max(lengths) if flush else min(lengths)
        pieces = []
        for row in self._rows:
            out = (
                torch.cat(row.out, -1)
                if len(row.out) > 1
                else (row.out[0] if row.out else self._empty_output_row())
            )
            if flush:
                if out.shape[-1] < take:
                    out = F.pad(out, (0, take - out.shape[-1]), value=-1 if self.mode == "encode" else 0)
                row.out, row.out_len = [], 0
            else:
                rest = out[..., take:]
                out = out[..., :take]
                row.out, row.out_len = ([rest] if rest.shape[-1] else []), rest.shape[-1]
            pieces.append(out)
        self.lengths = [min(n, take) for n in lengths]
        result = torch.stack(pieces)
        if self.mode == "encode":
            return result
        return result.reshape(self.batch_size, self.channels, result.shape[-1])

    # -- computation ----------------------------------------------------------------------------
    def _unit(self) -> int:
        """Input per step unit: samples per frame (encoding modes) or one frame of codes (decode)."""
        return 1 if self.mode == "decode" else self.hop_length

    def _advance(self, rows: Sequence[int], max_units: int | None = None) -> list[int]:
        """Run every whole frame pending in ``rows`` (at most ``max_units`` each), one batched step per
        group of rows with the same count; returns the rows that advanced."""
        unit = self._unit()
        groups: dict[int, list[int]] = {}
        for r in rows:
            units = self._rows[r].pending.shape[-1] // unit
            if max_units is not None:
                units = min(units, max_units)
            if units:
                groups.setdefault(units, []).append(r)
        for units, members in groups.items():
            take = units * unit
            x = torch.stack([self._rows[r].pending[..., :take] for r in members])
            for r in members:
                self._rows[r].pending = self._rows[r].pending[..., take:]
            self._run(members, x, final=False)
        return [r for members in groups.values() for r in members]

    def _finish(self, rows: list[int]) -> None:
        """Final step of ``rows``: whole frames first, then the remainder plus ``target_delay`` zeros."""
        groups: dict[int, list[int]] = {}
        for r in rows:
            row = self._rows[r]
            if self.mode == "roundtrip":
                row.limit = row.pushed
        self._advance(rows)
        for r in rows:
            row = self._rows[r]
            if self.mode != "decode" and row.pushed:
                groups.setdefault(row.pending.shape[-1] + self.target_delay, []).append(r)
        for size, members in groups.items():
            if size:
                x = torch.stack([self._rows[r].pending for r in members])
                self._run(members, F.pad(x, (0, self.target_delay)), final=True)
        for r in rows:
            row = self._rows[r]
            if self.mode == "decode" and row.limit is not None and row.pushed and row.emitted < row.limit:
                raise UsageError(
                    f"stream {r}: the codes pushed give {row.emitted} samples but its length is {row.limit}"
                )

    def _run(self, rows: list[int], x: torch.Tensor, final: bool) -> None:
        """One batched model step of ``rows`` on ``x`` and distribution of its output to their queues.

        The models run time-major (``(B, n, C)``, see :mod:`audiokit.nn.streaming`); latents go
        through the quantizer as rows ``(B * frames, dim)`` (the rows offline coding uses too); a round
        trip decodes the quantized rows the encoding summed (the same sum the decoder's lookup makes).
        """
        index = None if len(rows) == self.rows else torch.tensor(rows, device=self.device)
        batch = len(rows)
        frames = -(-x.shape[-1] // self._unit())
        with timed(self.timer, frames * batch):
            if self.mode == "decode":
                codes = x.transpose(0, 1).reshape(x.shape[1], -1)  # (n_q, B * frames)
                quantized = self.quantizer.decode_rows(codes, self.lookups)
            else:
                coded = self._step(self._encode, self.encoder_state, index, x.transpose(1, 2), final)
                codes, quantized = coded[0], coded[-1]
            if self.mode == "encode":
                out = codes.view(codes.shape[0], batch, -1).transpose(0, 1)
            else:
                latent = self.codec.condition_latent(
                    quantized.view(batch, -1, self.quantizer.dim), self.n_q, time_major=True
                )
                out = self._step(self._decoder_step, self.decoder_state, index, latent, final).transpose(1, 2)
        for i, r in enumerate(rows):
            self._enqueue(self._rows[r], out[i])

    @staticmethod
    def _step(step, state, index, x: torch.Tensor, final: bool) -> torch.Tensor:
        """A model's ``step_t`` on time-major ``x`` for the state rows ``index`` (all when ``None``)."""
        if index is None:
            return step(x, state, final)
        part = select_rows(state, index)
        y = step(x, part, final)
        assign_rows(state, index, part)
        return y

    def _enqueue(self, row: _Row, out: torch.Tensor) -> None:
        if self.mode != "encode":
            drop = min(row.skip, out.shape[-1])
            out, row.skip = out[..., drop:], row.skip - drop
            if row.limit is not None:
                out = out[..., : max(row.limit - row.emitted, 0)]
        if out.shape[-1]:
            row.out.append(out)
            row.out_len += out.shape[-1]
            row.emitted += out.shape[-1]
