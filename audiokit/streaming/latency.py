"""Latency accounting: per-step compute times of a session, and the measured algorithmic latency.

:class:`StepTimer` records the wall-clock compute time of every model step (one batched call of the
encoder and/or decoder on whole frames) with the number of frames it advanced; ``summary()`` gives
the distribution per frame. :func:`measure_latency` finds a model's algorithmic latency by pushing an
impulse sample by sample through a streaming session of any model of the shared interface (a codec's
round trip, an enhancer's, a bandwidth extender's from half its rate) and counting the samples pushed
until the output sample aligned with the impulse comes out.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

import torch

from audiokit.errors import UsageError


class StepTimer:
    """Compute time of the last ``capacity`` model steps, in seconds, with the frames each advanced.

    Kept as 16 bytes a step (a ring of machine numbers): every session and batcher has one, and a
    server's batchers step ~50 times a second for as long as it runs, so two deques of Python numbers
    (40-70 bytes a step) grew each codec batcher by 4-7 MB over its first half hour.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seconds, self._frames = array("d"), array("q")
        self._next = 0  # where the next step goes once the ring is full

    @property
    def seconds(self) -> list[float]:
        """Compute time of each kept step (s), oldest first."""
        return (self._seconds[self._next :] + self._seconds[: self._next]).tolist()

    @property
    def frames(self) -> list[int]:
        """Frames each kept step advanced, oldest first."""
        return (self._frames[self._next :] + self._frames[: self._next]).tolist()

    def record(self, seconds: float, frames: int) -> None:
        if len(self._seconds) < self.capacity:
            self._seconds.append(seconds)
            self._frames.append(frames)
            return
        self._seconds[self._next], self._frames[self._next] = seconds, frames
        self._next = (self._next + 1) % self.capacity

    def clear(self) -> None:
        self._seconds, self._frames, self._next = array("d"), array("q"), 0

    def summary(self) -> dict[str, float]:
        """``steps``, ``frames`` and per-frame compute time ``mean_ms``, ``p50_ms``, ``p99_ms``, ``max_ms``.

        A step that advanced ``k`` frames counts as ``k`` frames of ``seconds / k`` each.
        """
        if not self._seconds:
            return {"steps": 0, "frames": 0}
        weights = torch.frombuffer(self._frames, dtype=torch.int64).clamp(min=1)  # a copy
        per_frame = torch.frombuffer(self._seconds, dtype=torch.float64) / weights
        values = per_frame.repeat_interleave(weights)
        return {
            "steps": len(self._seconds),
            "frames": int(weights.sum()),
            "mean_ms": 1e3 * float(values.mean()),
            "p50_ms": 1e3 * float(values.quantile(0.5)),
            "p99_ms": 1e3 * float(values.quantile(0.99)),
            "max_ms": 1e3 * float(values.max()),
        }


class timed:
    """Context manager adding the elapsed time of its block to a :class:`StepTimer`."""

    def __init__(self, timer: StepTimer, frames: int) -> None:
        self.timer, self.frames = timer, frames

    def __enter__(self) -> timed:
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.record(time.perf_counter() - self.began, self.frames)


def measure_latency(
    model: Any, phases: list[int] | None = None, frames_before: int = 3, **stream_options: Any
) -> int:
    """Algorithmic latency of a streaming ``model`` in samples at its output rate, measured on a session.

    The session is ``model.stream(1, **stream_options)``, by default the one whose latency the model's
    ``algorithmic_latency`` declares: a codec's round trip (``mode="roundtrip"``), a bandwidth
    extender's from half its rate (``input_rate``), any other model's plain session (audio to audio:
    a codec's ``"encode"`` or ``"decode"`` session is a UsageError). For each impulse
    position ``t0 = frames_before * hop + phase`` (input samples, ``hop`` the input-rate hop) the
    impulse and then zeros are pushed one sample at a time; the latency at that phase is the number of
    input samples pushed from the impulse (inclusive) until the output sample aligned with it has been
    returned, times the output/input rate ratio. The result is the maximum over ``phases`` (default:
    every phase within a hop), i.e. the worst case.
    """
    if not all(hasattr(model, a) for a in ("stream", "hop_length", "sample_rate", "algorithmic_latency")):
        raise UsageError(
            f"measure_latency takes a streaming model (a codec, enhancer or bandwidth extender), "
            f"got {type(model).__qualname__}"
        )
    options = {**_declared_session_options(model), **stream_options}
    if options.get("mode", "roundtrip") != "roundtrip":
        raise UsageError(
            f"measure_latency times audio in to audio out; a codec's {options['mode']!r} session does not "
            "give audio for audio (measure mode='roundtrip')"
        )
    input_rate = options.get("input_rate") or model.sample_rate
    factor, rest = divmod(model.sample_rate, input_rate)
    if rest or not factor:
        raise UsageError(
            f"measure_latency: input_rate must divide the model's {model.sample_rate} Hz, got {input_rate}"
        )
    hop = model.hop_length // factor
    phases = list(range(hop)) if phases is None else phases
    worst = 0
    with torch.inference_mode():
        for phase in phases:
            session = model.stream(1, **options)
            t0 = frames_before * hop + phase
            x = torch.zeros(1, model.channels, t0 + 4 * hop + model.algorithmic_latency)
            x[..., t0] = 1.0
            returned = session.push(x[..., :t0]).shape[-1]
            pushed = t0
            while returned <= factor * t0:
                if pushed == x.shape[-1]:
                    raise RuntimeError(f"output sample {factor * t0} never came out of the stream")
                returned += session.push(x[..., pushed : pushed + 1]).shape[-1]
                pushed += 1
            worst = max(worst, factor * (pushed - t0))
    return worst


def _declared_session_options(model: Any) -> dict[str, Any]:
    """``model.stream`` options of the session whose latency ``model.algorithmic_latency`` declares."""
    if getattr(model, "family", None) == "codec":
        return {"mode": "roundtrip"}
    if getattr(model, "family", None) == "bwe":
        return {"input_rate": model.sample_rate // 2}
    return {}
