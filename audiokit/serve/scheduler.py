"""One scheduler per served model: all its live streams advance together in batched steps.

The event loop only queues: a connection hands its decoded input to :meth:`Scheduler.push` and reads
its output from :attr:`Stream.output`. The scheduler's task gathers what arrived (new streams, input,
ends, dropped clients) into a job and runs it in the model's single worker thread: push the input,
one batched step of every stream holding a whole hop, pull what came out. While that step computes,
new input accumulates, so batches grow with load. A stream holding several hops (a 20 ms message of
two 10 ms hops, a client sending faster than real time, or a server that fell behind) advances by up
to ``max_hops`` of them in that step, so a server that fell behind catches up instead of drifting.
The streams that ended are flushed after the step, together (batched final steps), so many streams
ending at once cost about one step, not one step each. A stream that ends holding more than
``max_hops`` hops (a client sending faster than real time) first steps through its backlog like any
other, ``max_hops`` a step, so its end never stalls the other streams for its whole backlog.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from audiokit.serve.engines import Engine, StreamKey, WireAudio
from audiokit.serve.metrics import Metrics
from audiokit.serve.protocol import StartRequest

log = logging.getLogger("audiokit.serve")

DONE = None
"""Put on :attr:`Stream.output` after a stream's last audio."""


@dataclass(eq=False)
class Stream:
    """One client stream, as the event loop sees it (``wire`` and ``key`` belong to the worker)."""

    id: str
    request: StartRequest
    wire: WireAudio
    output: asyncio.Queue = field(default_factory=asyncio.Queue)
    """Processed PCM as float32 arrays at the client's rate, then :data:`DONE`."""
    received_in: int = 0
    """Client-rate input samples queued (event-loop side)."""
    processed: int = 0
    """Model-rate input samples stepped (worker side)."""
    unsent: int = 0
    """Client-rate output samples in :attr:`output`, not sent yet."""
    failed: str | None = None
    """Why the server ended this stream, when it did."""
    key: StreamKey | None = None
    inbox: list[np.ndarray] = field(default_factory=list)
    ending: bool = False
    """``end`` came (from the client, or from a draining server)."""
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after every step that touched the stream (a paused reader waits on it)."""

    @property
    def received(self) -> int:
        """Model-rate input samples queued, from the whole count (rounding each message's share added up)."""
        return round(self.received_in * self.wire.model_rate / self.wire.client_rate)

    @property
    def backlog(self) -> int:
        """Model-rate input samples waiting for a step."""
        return self.received - self.processed


@dataclass
class _Job:
    opens: list[Stream]
    pushes: list[tuple[Stream, np.ndarray]]
    ends: list[Stream]
    drops: list[Stream]


class Scheduler:
    """Runs ``engine``'s batched steps (up to ``max_hops`` hops per stream each) in one worker thread
    for every stream opened here."""

    def __init__(self, engine: Engine, metrics: Metrics, max_hops: int = 8) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_hops = max_hops
        self.streams: set[Stream] = set()
        self.hop_seconds = engine.hop_length / engine.sample_rate
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"audiokit-{engine.name}")
        self._wake = asyncio.Event()
        self._job = _Job([], [], [], [])
        self._ready = 0
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None
        self._owners: dict[StreamKey, Stream] = {}  # worker side
        self._ending: list[Stream] = []  # worker side: ended, still holding more than max_hops hops

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"scheduler-{self.engine.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- event-loop side -------------------------------------------------------------------------
    def open(self, request: StartRequest) -> Stream:
        """A new stream (the caller checked the limits)."""
        stream = Stream(
            f"{self.engine.name}-{next(self._ids)}",
            request,
            WireAudio(request.sample_rate, self.engine.sample_rate, request.high_band),
        )
        self.streams.add(stream)
        self._job.opens.append(stream)
        self.metrics.live.labels(self.engine.name).inc()
        self._wake.set()
        return stream

    def push(self, stream: Stream, samples: np.ndarray) -> None:
        """Queue ``samples`` (float32 at the client's rate) for ``stream``."""
        self._job.pushes.append((stream, samples))
        stream.received_in += samples.shape[0]
        self.metrics.samples_in.labels(self.engine.name).inc(samples.shape[0])
        self._wake.set()

    def end(self, stream: Stream) -> None:
        """The client sent ``end``: process the rest, then :data:`DONE`."""
        if not stream.ending:
            stream.ending = True
            self._job.ends.append(stream)
            self._wake.set()

    def drop(self, stream: Stream) -> None:
        """The client went away: free the stream, no more output."""
        if stream in self.streams:
            self._forget(stream)
            self._job.drops.append(stream)
            self._wake.set()

    def _forget(self, stream: Stream) -> None:
        """``stream`` is no longer live, once: a client that sends ``end`` and vanishes while its rest
        is processed is dropped first, and its final output still comes back afterwards."""
        if stream in self.streams:
            self.streams.remove(stream)
            self.metrics.live.labels(self.engine.name).dec()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            job, self._job = self._job, _Job([], [], [], [])
            if job.opens or job.pushes or job.ends or job.drops or self._ready:
                await self._advance(job)
            del job  # no ended stream (and its native resamplers) outlives its end in this frame

    async def _advance(self, job: _Job) -> None:
        """Run ``job`` in the worker and hand the outputs to their streams."""
        try:
            outputs, self._ready = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._tick, job
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: end this model's streams, keep the server up
            log.exception("scheduler %s failed", self.engine.name)
            self._fail_all(f"internal error in {self.engine.name}: {type(exc).__name__}")
            return
        for stream, samples, final in outputs:
            if stream in self.streams or final:
                if samples.shape[0]:
                    stream.output.put_nowait(samples)
                    stream.unsent += samples.shape[0]
                if final:
                    stream.output.put_nowait(DONE)
                    self._forget(stream)
            stream.progress.set()
        if self._ready:
            self._wake.set()

    def _fail_all(self, reason: str) -> None:
        self._ready = 0
        for stream in list(self.streams):
            stream.failed = reason
            stream.output.put_nowait(DONE)
            stream.progress.set()
            self._forget(stream)
        self.engine.reset()
        self._ending = []
        for stream in self._owners.values():  # what their clients send until they read the 1011 goes nowhere
            stream.key = None
        self._owners.clear()

    # -- worker side -------------------------------------------------------------------------------
    def _tick(self, job: _Job) -> tuple[list[tuple[Stream, np.ndarray, bool]], int]:
        """Run ``job`` in the worker: returns ``(stream, output at the client's rate, final)`` triples and
        how many streams still hold a whole hop."""
        engine, name = self.engine, self.engine.name
        for stream in job.drops:  # first: their slots may be needed by the new streams
            if stream.key is not None:
                engine.close(self._owners.pop(stream.key).key)
                stream.key = None
        for stream in job.opens:
            if stream in self.streams:  # not dropped before it opened
                stream.key = engine.open(stream.request)
                self._owners[stream.key] = stream
        for stream, samples in job.pushes:
            if stream.key is not None:
                engine.push(stream.key, stream.wire.to_model(samples))
        began = time.perf_counter()
        advanced = engine.step(self.max_hops)
        seconds = time.perf_counter() - began
        outputs = []
        if advanced:
            hops = max(h for _, h, _ in advanced)
            self.metrics.step_seconds.labels(name).observe(seconds)
            self.metrics.batch_size.labels(name).observe(len(advanced))
            self.metrics.step_hops.labels(name).observe(hops)
            if seconds > hops * self.hop_seconds:
                self.metrics.late_steps.labels(name).inc()
            owners, hop_length = self._owners, engine.hop_length
            for key, count, samples in advanced:
                stream = owners[key]
                stream.processed += count * hop_length
                outputs.append((stream, stream.wire.from_model(samples), False))
        waiting = [stream for stream in self._ending + job.ends if stream.key is not None]
        ending = [stream for stream in waiting if engine.backlog(stream.key) <= self.max_hops]
        self._ending = [stream for stream in waiting if engine.backlog(stream.key) > self.max_hops]
        for stream in ending:
            engine.push(stream.key, stream.wire.to_model(np.zeros(0, np.float32), last=True))
        rests = engine.close_many([stream.key for stream in ending])
        for stream, rest in zip(ending, rests, strict=True):
            outputs.append((stream, stream.wire.from_model(rest, last=True), True))
            del self._owners[stream.key]
            stream.key = None
        self.metrics.samples_out.labels(name).inc(sum(samples.shape[0] for _, samples, _ in outputs))
        return outputs, engine.ready()
