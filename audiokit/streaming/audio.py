"""Streaming session of an audio-to-audio model (enhancer, bandwidth extender), chunk by chunk.

The model steps whole hops: ``model.step(x (N, 1, k * hop_length), state, **step_options)`` returns
``k * hop_length`` samples that lag the input by ``model.output_lag`` samples. An
:class:`AudioStream` buffers each row's input to whole hops, drops the first ``output_lag`` output
samples of each row, and on :meth:`AudioStream.flush` pads the rest with zeros (to whole hops plus
the lag) and stops at the row's input length, exactly as the model's offline ``forward`` does. So the
concatenated outputs equal the offline output for any chunking.

Rows. Pushing ``(B, C, n)`` feeds row ``b * C + c`` (the model is mono). Rows advance together;
:meth:`AudioStream.reset` restarts some rows (zero state), after which rows may hold different amounts
of output: :meth:`push` returns what every row has ready, :meth:`flush` everything, zero-padded to the
longest row, with :attr:`AudioStream.lengths` giving each row's valid length.
:meth:`AudioStream.state_dict` / :meth:`AudioStream.load_state_dict` move live streams to another
session, as a codec session's do.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from audiokit.checks import whole_number
from audiokit.errors import UsageError
from audiokit.nn.state import flatten_state, load_flat_state, row_indices, zero_rows
from audiokit.streaming.compiled import HopwiseSteps, compile_hopwise
from audiokit.streaming.graphs import GraphedStep


@dataclass
class AudioRow:
    """One stream's bookkeeping: input not yet stepped, queued output and counters since its start."""

    pending: torch.Tensor  # (n,) input not yet stepped
    out: list[torch.Tensor] = field(default_factory=list)
    out_len: int = 0
    pushed: int = 0  # input samples since the row's start
    skip: int = 0  # output samples still to drop at the start (the model's lag)
    emitted: int = 0  # output samples queued since the start

    def advance(self, samples: int, out: torch.Tensor, final: bool) -> None:
        """Account for one model step on the next ``samples`` pending samples that gave ``out (n,)``:
        drop what still lags and, in a ``final`` step, what lies past the input's length."""
        self.pending = self.pending[samples:]
        drop = min(self.skip, out.shape[0])
        self.skip -= drop
        out = out[drop:]
        if final:
            out = out[: max(0, self.pushed - self.emitted)]
        self.out.append(out)
        self.out_len += out.shape[0]
        self.emitted += out.shape[0]


def step_options(model, options: dict, also: tuple[str, ...]) -> dict:
    """``model.step_options(**options)``: the knobs of ``model``'s sessions, with a
    :class:`~audiokit.errors.UsageError` naming what they take (the knobs, and ``also``: the session's
    own options) for any other option."""
    takes = [name for name in inspect.signature(model.step_options).parameters if name != "self"]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise UsageError(
            f"{model.name} sessions take no option {', '.join(map(repr, unknown))}; they take "
            f"{', '.join([*also, *takes])}"
        )
    return model.step_options(**options)


def audio_step(
    model, step_options: dict, compile: bool | str | None, device: torch.device, rows: int | None = None
) -> tuple[Callable, bool]:
    """The step function an audio session calls as ``step(x, state, final)``: ``model.step`` with
    ``step_options``, or with ``compile="aoti"`` that step compiled ahead of time for chunks of one and
    of two hops, which run any whole number of hops (:class:`~audiokit.streaming.compiled.HopwiseSteps`;
    other chunks, and every step where no library can be built, run eagerly), or with
    ``compile="cuda_graph"`` on a GPU replayed from CUDA graphs, one per chunk shape of all ``rows``
    (steps of part of the rows, final steps, and all where recording fails run eagerly); and whether
    it is compiled."""
    if compile is False:  # a codec session's "not compiled" (its default)
        compile = None
    if compile not in (None, "aoti", "cuda_graph"):
        raise UsageError(f"compile must be None (or False), 'aoti' or 'cuda_graph', got {compile!r}")
    if compile == "cuda_graph" and device.type == "cuda":
        return GraphedStep(functools.partial(model.step, **step_options), batch=rows, model=model), True
    if compile == "aoti":
        with torch.inference_mode():
            template = model.init_state(1, device)  # one stream's
        hop = torch.zeros(1, 1, model.hop_length, device=device)
        compiled = compile_hopwise(model, model.step, template, hop, step_options)
        if compiled is not None:
            return compiled, True
    return functools.partial(model.step, **step_options), False


def step_mode(step: Callable) -> Callable[[], contextlib.AbstractContextManager]:
    """The context to call ``step`` in: none for compiled hop-wise steps (they need none), else
    inference mode."""
    return contextlib.nullcontext if isinstance(step, HopwiseSteps) else torch.inference_mode


class AudioStream:
    """``batch_size`` items of ``channels`` channels streamed through ``model`` (see the module docstring).

    ``step_options`` go to every ``model.step`` call (e.g. an enhancer's ``atten_lim_db`` and ``dry``,
    turned into its ``mix`` by the model's ``step_options``). ``compile="aoti"`` runs steps of whole hops
    on libraries compiled ahead of time (:mod:`audiokit.streaming.compiled`; eager where they cannot be
    built, :attr:`compiled` says which); ``compile="cuda_graph"`` replays steps on a GPU from a CUDA
    graph (:mod:`audiokit.streaming.graphs`; eager off the GPU).
    """

    def __init__(
        self, model, batch_size: int = 1, channels: int = 1, compile: bool | str | None = None, **options
    ) -> None:
        batch_size, channels = whole_number(batch_size, "batch_size"), whole_number(channels, "channels")
        self.model = model
        self.batch_size = batch_size
        self.channels = channels
        self.rows = batch_size * channels
        self.hop_length = model.hop_length
        self.lag = model.output_lag
        self.step_options = step_options(model, options, ("channels", "compile"))
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            self.state = model.init_state(self.rows, self.device)
        self._step, self.compiled = audio_step(model, self.step_options, compile, self.device, self.rows)
        self._step_mode = step_mode(self._step)
        self._rows = [self._new_row() for _ in range(self.rows)]
        self.lengths: list[int] = [0] * self.rows

    def _new_row(self) -> AudioRow:
        return AudioRow(torch.zeros(0, device=self.device), skip=self.lag)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Feed float ``x (B, C, n)`` at the model's rate (any ``n >= 0``); returns ``(B, C, m)``: what
        every row has ready. Integer PCM, numpy arrays and NaN or infinite samples raise
        :class:`~audiokit.errors.UsageError` (the model's ``audio_input``) before they reach the state."""
        shape = f"({self.batch_size}, {self.channels}, samples)"
        x = self.model.audio_input(x, "push", shape, allow_empty=True)
        if x.shape[0] != self.batch_size or x.shape[1] != self.channels:
            raise UsageError(f"expected a chunk of shape {shape}, got {tuple(x.shape)}")
        return self.push_checked(x)

    def push_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`push` of float ``x (B, C, n)`` checked at its source already: audio resampled from
        audio that passed the check at its own rate (what an
        :class:`~audiokit.streaming.upsampled.UpsampledStream` feeds this session, and the file commands
        their resampled blocks). A resampler overshoots a loud input within
        :data:`~audiokit.io.FLOAT_PEAK_LIMIT`; checked again, such audio was refused, failing streams and
        files that the offline calls take."""
        x = x.to(self.device, torch.float32).reshape(self.rows, -1)
        if self.in_step(x.shape[-1]):  # no buffering
            with self._step_mode():
                return self.stepped(self._step(x[:, None], self.state, final=False))
        for row, piece in zip(self._rows, x, strict=True):
            row.pending = torch.cat([row.pending, piece])
            row.pushed += piece.shape[0]
        hops = min(row.pending.shape[0] for row in self._rows) // self.hop_length
        if hops:
            self._run(hops * self.hop_length)
        return self._collect(flush=False)

    def flush(self) -> torch.Tensor:
        """End every stream: process the rest, return ``(B, C, m)`` (zero-padded rows, see
        :attr:`lengths`), and reset every row."""
        needed = [
            -(-(row.pending.shape[0] + self.lag) // self.hop_length) * self.hop_length for row in self._rows
        ]
        if max(needed):
            for row in self._rows:
                row.pending = F.pad(row.pending, (0, max(needed) - row.pending.shape[0]))
            self._run(max(needed), final=True)
        out = self._collect(flush=True)
        self.reset(range(self.rows))
        return out

    def reset(self, rows: Sequence[int] | int) -> None:
        """Restart ``rows`` (indices ``b * C + c``): zero state, empty buffers."""
        rows = row_indices(rows, self.rows, "row")
        for r in rows:
            self._rows[r] = self._new_row()
        with torch.inference_mode():
            zero_rows(self.state, torch.tensor(rows, dtype=torch.long, device=self.device))

    def state_dict(self) -> dict:
        """Everything needed to continue these streams in another session of the same model, rows and
        options (another worker, after a restart): the model's state, each row's buffers and counters.
        Only tensors, numbers, strings and lists, so ``torch.load(..., weights_only=True)`` reads it."""
        return {
            "model": self.model.name,
            "rows": self.rows,
            "options": self._options(),
            "state": flatten_state(self.state),
            "streams": [
                {
                    "pending": row.pending.clone(),
                    "out": self._queued_output(row).clone(),
                    "counters": [row.pushed, row.skip, row.emitted],
                }
                for row in self._rows
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the streams saved by :meth:`state_dict`; :class:`~audiokit.errors.UsageError` (and
        nothing changed) when they come from a session of another model, row count or options."""
        expected = (self.model.name, self.rows, self._options())
        got = (state.get("model"), state.get("rows"), state.get("options"))
        if got != expected:
            raise UsageError(f"streaming state of (model, rows, options) = {got} does not fit {expected}")
        with torch.inference_mode():
            load_flat_state(self.state, state["state"])
        for r, saved in enumerate(state["streams"]):
            out = saved["out"].to(self.device)
            pushed, skip, emitted = (int(v) for v in saved["counters"])
            pending, outs = saved["pending"].to(self.device), [out] if out.shape[0] else []
            self._rows[r] = AudioRow(pending, outs, out.shape[0], pushed, skip, emitted)

    def _options(self) -> dict[str, float]:
        """The step options as plain floats (what :meth:`state_dict` saves and compares)."""
        return {name: float(value) for name, value in sorted(self.step_options.items())}

    def in_step(self, samples: int) -> bool:
        """Whether a push of ``samples`` (whole hops) finds every row with nothing pending, queued or
        still to drop, so that it can go straight through the model (the steady state of a session
        fed whole hops)."""
        return (
            samples > 0
            and samples % self.hop_length == 0
            and all(not row.skip and not row.out_len and not row.pending.shape[0] for row in self._rows)
        )

    def stepped(self, y: torch.Tensor) -> torch.Tensor:
        """Account for one step, taken while :meth:`in_step`, that gave ``y (rows, 1, n)``; returns it
        as the push's ``(B, C, n)``."""
        samples = y.shape[-1]
        for i, row in enumerate(self._rows):
            row.pushed += samples
            row.emitted += samples
            self.lengths[i] = samples
        return y.reshape(self.batch_size, self.channels, samples)

    def _run(self, samples: int, final: bool = False) -> None:
        x = torch.stack([row.pending[:samples] for row in self._rows])[:, None]
        with torch.inference_mode():
            y = self._step(x, self.state, final=final)[:, 0]
        for row, out in zip(self._rows, y, strict=True):
            row.advance(samples, out, final)

    def _collect(self, flush: bool) -> torch.Tensor:
        queued = [self._queued_output(row) for row in self._rows]
        ready = max(q.shape[0] for q in queued) if flush else min(q.shape[0] for q in queued)
        if all(q.shape[0] == ready for q in queued):  # rows in step (the usual case): no copies
            result = torch.stack(queued) if self.rows > 1 else queued[0][None]
            for i, row in enumerate(self._rows):
                self.lengths[i] = ready
                row.out, row.out_len = [], 0
            return result.view(self.batch_size, self.channels, ready)
        result = torch.zeros(self.rows, ready, device=self.device)
        for i, (row, data) in enumerate(zip(self._rows, queued, strict=True)):
            take = min(ready, data.shape[0])
            result[i, :take] = data[:take]
            self.lengths[i] = take
            row.out = [data[take:]]
            row.out_len = data.shape[0] - take
        return result.view(self.batch_size, self.channels, ready)

    def _queued_output(self, row: AudioRow) -> torch.Tensor:
        """``row``'s queued output as one ``(n,)`` tensor."""
        if len(row.out) == 1:
            return row.out[0]
        return torch.cat(row.out) if row.out else torch.zeros(0, device=self.device)
